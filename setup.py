"""Copies the bundled contract root (contracts/, prompts/, contracts.lock) into the wheel.

The repository keeps them at the top level (the layout users copy into their own apps);
the wheel ships them as `jarvis/_bundled/`, which `jarvis.contract.bundled_root` finds.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


class BuildWithContracts(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "jarvis" / "_bundled"
        for name in ("contracts", "prompts", "examples"):
            if (HERE / name).is_dir():
                shutil.copytree(HERE / name, target / name, dirs_exist_ok=True)
        shutil.copy2(HERE / "contracts.lock", target / "contracts.lock")


setup(cmdclass={"build_py": BuildWithContracts})
