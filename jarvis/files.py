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

import yaml

from jarvis.errors import JarvisError


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


def read_text(path: Path, error: type[JarvisError]) -> str:
    """Read a UTF-8 text file strictly; any failure is `error` naming the file.

    Raises:
        error: unreadable, or not UTF-8 (with the reason and the byte offset).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return decode_text(data, str(path), error)


def decode_text(data: bytes, name: str, error: type[JarvisError], bom: bool = False) -> str:
    """Decode UTF-8 strictly (`bom`: a leading BOM is dropped); `error` names `name`.

    Raises:
        error: not UTF-8 (with the reason and the byte offset).
    """
    try:
        return data.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{name}: not UTF-8: {exc.reason} at byte {exc.start}") from exc


def read_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Yield `(line number, raw line, parsed value or None)` per line.

    A line that is not UTF-8 or not JSON (or nested too deeply) parses as None; its raw text
    is decoded with U+FFFD replacements, for messages.
    """
    with path.open("rb") as fh:
        for number, data in enumerate(fh, 1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError:
                yield number, data.decode("utf-8", "replace"), None
                continue
            try:
                parsed = json.loads(raw)
            except (ValueError, RecursionError):
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


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: `*x` is refused at once, before any expansion.

    An alias bomb (a few KB of nested `*a` references) otherwise expands to billions of
    nodes and hangs whatever walks the result; no jarvis file needs an alias.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in jarvis files", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse YAML safely: plain data only, no tags, no aliases.

    Raises:
        yaml.YAMLError: invalid YAML, or an alias (the message gives its line and column).
    """
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def compose_yaml(text: str) -> Any:
    """Return the YAML node tree (for edits that keep the text), refusing aliases too."""
    return yaml.compose(text, Loader=_NoAliasLoader)
