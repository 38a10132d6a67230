"""Files: atomic file writes (temp + rename, so an interrupted run keeps the old file), JSONL.

Whole output folders are written by `jarvis.outdir.atomic_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 `text` (LF line ends, as given) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Yield `(line number, raw line, parsed value or None when invalid JSON)` per line."""
    with path.open(encoding="utf-8", newline="") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            yield number, raw, parsed


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    return sha256_and_lines(path)[0]


def sha256_and_lines(path: Path) -> tuple[str, int]:
    """Return a file's hex sha256 and its number of newline characters, in one read."""
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            lines += block.count(b"\n")
    return digest.hexdigest(), lines
