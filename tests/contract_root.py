"""Test helper: a private copy of the bundled contract root that a test may edit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from jarvis.contract import bundled_root


def copy_root(dest: Path, *, retrieval: bool = False) -> Path:
    """Copy contracts/, prompts/ and contracts.lock of the bundled root into `dest`.

    Versioning tests add `reply@2` themselves as a copy of reply@1, so by default the copy
    stops at reply@1 (the bundled reply@2, with retrieval, is left out); `retrieval=True`
    copies everything.
    """
    src = bundled_root()
    shutil.copytree(src / "contracts", dest / "contracts")
    shutil.copytree(src / "prompts", dest / "prompts")
    shutil.copy2(src / "contracts.lock", dest / "contracts.lock")
    if not retrieval:
        spec = dest / "contracts" / "reply.yaml"
        text = spec.read_text()
        spec.write_text(text[: text.index("\n  2:\n") + 1])
        shutil.rmtree(dest / "prompts" / "reply" / "v2")
        lock = json.loads((dest / "contracts.lock").read_text())
        del lock["reply@2"]
        (dest / "contracts.lock").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
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
