"""Files: atomic writes (temp + rename, so an interrupted run keeps the old output), JSONL."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jarvis.errors import OutputExistsError


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


@contextlib.contextmanager
def atomic_dir(dest: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `dest`; on success it replaces `dest` in one rename.

    On any error (or a kill) the temp folder is left or removed, never `dest`: a previous
    good output stays intact and no half-written `dest` appears.

    Raises:
        OutputExistsError: `dest` exists and `force` is false.
    """
    dest = dest.absolute()
    if dest.exists() and not force:
        raise OutputExistsError(f"{dest} exists; pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if dest.exists():
        # Move the old output aside first so the swap is two renames, never a copy.
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.rmdir(old)
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
