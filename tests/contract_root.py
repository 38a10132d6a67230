"""Test helper: a private copy of the bundled contract root that a test may edit."""

from __future__ import annotations

import shutil
from pathlib import Path

from jarvis.contract import bundled_root


def copy_root(dest: Path) -> Path:
    """Copy contracts/, prompts/ and contracts.lock of the bundled root into `dest`."""
    src = bundled_root()
    shutil.copytree(src / "contracts", dest / "contracts")
    shutil.copytree(src / "prompts", dest / "prompts")
    shutil.copy2(src / "contracts.lock", dest / "contracts.lock")
    return dest


def add_version(root: Path, name: str, old: int, new: int) -> Path:
    """Copy `prompts/<name>/v<old>` to `v<new>` and add the version to the spec (includes too)."""
    folder = root / "prompts" / name
    shutil.copytree(folder / f"v{old}", folder / f"v{new}")
    for path in (folder / f"v{new}").glob("*.j2"):
        path.write_text(path.read_text().replace(f'"v{old}/', f'"v{new}/'))
    spec = root / "contracts" / f"{name}.yaml"
    text = spec.read_text()
    start = text.index(f"  {old}:\n")
    block = text[start:]
    spec.write_text(text + block.replace(f"  {old}:\n", f"  {new}:\n", 1))
    return folder / f"v{new}"
