"""Atomic writes: an interrupted write keeps the previous output; no half-written folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from jarvis.errors import OutputExistsError
from jarvis.files import atomic_dir, atomic_write_text, sha256_file


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "lock.json"
    atomic_write_text(target, "one\n")
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["lock.json"]  # no temp files left
    assert sha256_file(target) == "27dd8ed44a83ff94d557f9fd0412ed5a8cbca69ea04922d88c01184a07300a5a"


def test_atomic_dir_keeps_previous_output_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(dest, force=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (dest / "a.txt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OutputExistsError, match="exists; pass --force to replace it"):
        with atomic_dir(dest):
            pass
    with atomic_dir(dest, force=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]
