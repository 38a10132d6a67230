"""Atomic file writes: an interrupted write keeps the previous file; no temp file left."""

from __future__ import annotations

from pathlib import Path

from jarvis.files import atomic_write_text, sha256_file


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "lock.json"
    atomic_write_text(target, "one\n")
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["lock.json"]  # no temp files left
    assert sha256_file(target) == "27dd8ed44a83ff94d557f9fd0412ed5a8cbca69ea04922d88c01184a07300a5a"
