"""The wheel ships the bundled contract root, so `jarvis contract list` works from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_bundled_root_and_works_elsewhere(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("jarvis-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "jarvis/py.typed",
        "jarvis/_bundled/contracts.lock",
        "jarvis/_bundled/contracts/reply.yaml",
        "jarvis/_bundled/prompts/reply/v1/user.j2",
        "jarvis/_bundled/examples/reply/perfect.jsonl",
    ):
        assert name in names
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("JARVIS_ROOT", None)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import jarvis, sys; print(jarvis.__file__); "
            "from jarvis.cli import main; sys.argv=['jarvis','contract','list']; main()",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.stdout.splitlines()[0].startswith(str(site)), out.stdout + out.stderr
    assert f"root: {site / 'jarvis' / '_bundled'}" in out.stdout
    assert "reply@1" in out.stdout and "codegen@1" in out.stdout


def test_installed_bundled_root_is_read_only_and_examples_are_reachable(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("jarvis-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("JARVIS_ROOT", None)
    bundled = site / "jarvis" / "_bundled"
    before = sorted(p.relative_to(bundled) for p in bundled.rglob("*"))

    def jarvis(*args: str) -> subprocess.CompletedProcess[str]:
        code = (
            f"import sys; from jarvis.cli import main; sys.argv=['jarvis', *{list(args)!r}]; main()"
        )
        return subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    done = jarvis("contract", "bump", "reply")
    assert done.returncode == 3
    assert done.stderr.startswith(f"error: {bundled} is the contract root bundled inside")
    assert "jarvis contract new NAME --root DIR" in done.stderr
    assert sorted(p.relative_to(bundled) for p in bundled.rglob("*")) == before
    done = jarvis("examples", "ex")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ex" / "reply" / "threads.jsonl").is_file()
    done = jarvis("contract", "new", "mine", "--root", "own")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "own" / "mine_schema.py").is_file()
