"""Input readers: JSONL and JSON-array files, folders of them, gzipped or not.

Every record comes with its source file and a 1-based line number, so errors read
`data/x.jsonl:17: reason`. For JSONL the line is the physical line; for a JSON array it is
the line where the item's opening brace stands. A UTF-8 BOM and CRLF line ends are accepted.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from jarvis.errors import DatasetError, InputError

DEFAULT_TAG = "default"
SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
BOM = b"\xef\xbb\xbf"
JSON_SPACE = b" \t\r\n"


@dataclass(frozen=True)
class InputSpec:
    """One `--input`: a file or folder and the tag its records carry."""

    path: str
    tag: str = DEFAULT_TAG

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """Parse `PATH` or `TAG=PATH`.

        Raises:
            InputError: the tag or the path is empty.
        """
        tag, sep, path = text.partition("=")
        if not sep or "/" in tag or "\\" in tag:
            tag, path = DEFAULT_TAG, text
        if not path:
            raise InputError(f"--input {text!r}: no path")
        if not TAG_PATTERN.match(tag):
            raise InputError(f"--input {text!r}: tag {tag!r} must be letters, digits, _ . -")
        return cls(path=path, tag=tag)

    def __str__(self) -> str:
        return self.path if self.tag == DEFAULT_TAG else f"{self.tag}={self.path}"


@dataclass
class RawRecord:
    """One record as read: where it is, its verbatim text, and the parsed object or an error."""

    file: str
    line: int
    text: str
    value: dict[str, Any] | None
    error: str | None = None
    # The exact bytes when `text` could not be decoded (rejects keep them as base64).
    blob: bytes | None = None


def _is_data_file(path: Path) -> bool:
    return path.name.endswith(SUFFIXES) and not path.name.startswith(".")


def expand(spec: InputSpec) -> list[Path]:
    """Return the data files of one input, sorted (a folder is searched recursively).

    Raises:
        InputError: the path does not exist.
        DatasetError: a folder holds no data file.
    """
    path = Path(spec.path)
    if path.is_file():
        return [path]
    if path.is_dir():
        # Hidden files and folders (`.git/`, a killed run's `.out.*.partial/`) are never inputs.
        files = sorted(
            p
            for p in path.rglob("*")
            if not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.is_file()
            and _is_data_file(p)
        )
        if not files:
            raise DatasetError(
                f"{spec.path}: folder has no input files ({', '.join(SUFFIXES)}); "
                "nothing to train on"
            )
        return files
    raise InputError(f"{spec.path}: no such file or folder")


def _open(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _decode_error(file: str, line: int, data: bytes, why: str) -> RawRecord:
    return RawRecord(file, line, data.decode("utf-8", "replace"), None, why, blob=data)


def parse_object(file: str, line: int, data: bytes) -> RawRecord:
    """One line's bytes as a record: its JSON object, or the reason it is none (not UTF-8,
    not JSON, not an object)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _decode_error(file, line, data, f"not UTF-8: {exc.reason} at byte {exc.start}")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return RawRecord(file, line, text, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(value, dict):
        return RawRecord(file, line, text, None, f"expected a JSON object, got {_kind(value)}")
    return RawRecord(file, line, text, value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def iter_file(path: Path, shown: str) -> Iterator[RawRecord]:
    """Yield every record of one file, in file order.

    A file whose first non-blank character is `[` is read as a JSON array; any other as
    JSONL (blank lines skipped).

    Args:
        path: the file (gzipped when its name ends in `.gz`).
        shown: the name used in messages (the path as the user gave it).

    Raises:
        InputError: the file cannot be read, or a JSON array is malformed as a whole.
    """
    try:
        with _open(path) as fh:
            head = _head(fh)
            stripped = head[3:] if head.startswith(BOM) else head
            if stripped.lstrip(JSON_SPACE).startswith(b"["):
                data = head + fh.read()
                yield from _iter_array(data[3:] if head.startswith(BOM) else data, shown)
                return
            if path.name.endswith((".json", ".json.gz")):
                # A `.json` file may hold one pretty-printed record: as JSONL every line of it
                # would be rejected. If the whole file is not one object, it is JSONL after all.
                data = head + fh.read()
                body = data[3:] if data.startswith(BOM) else data
                single = _single_object(body, shown)
                if single is not None:
                    yield single
                    return
                head, fh = data, io.BytesIO()
            yield from _iter_lines(head, fh, shown)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{shown}: cannot read: {exc}") from exc


def _head(fh: IO[bytes]) -> bytes:
    """The first bytes, read on past leading whitespace: the first non-blank byte decides
    the format."""
    head = fh.read(4096)
    while not head.removeprefix(BOM).lstrip(JSON_SPACE):
        more = fh.read(1 << 16)
        if not more:
            break
        head += more
    return head


def plain_lines(path: Path) -> bool:
    """Whether `iter_file` reads this file as uncompressed JSONL, line by line (so it can
    be read in byte ranges): not gzipped, not `.json` (one object or an array), not an array.
    """
    if path.name.endswith((".gz", ".json")):
        return False
    with path.open("rb") as fh:
        return not _head(fh).removeprefix(BOM).lstrip(JSON_SPACE).startswith(b"[")


def _single_object(body: bytes, shown: str) -> RawRecord | None:
    """Return the record if `body` is exactly one JSON object, else None."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    line = body[: len(body) - len(body.lstrip(JSON_SPACE))].count(b"\n") + 1
    return RawRecord(shown, line, body.decode("utf-8").strip(), value)


def _iter_lines(head: bytes, fh: IO[bytes], shown: str) -> Iterator[RawRecord]:
    number = 0
    first = True
    rest = b""

    def lines() -> Iterator[bytes]:
        nonlocal rest
        buf = head
        while True:
            parts = buf.split(b"\n")
            rest = parts.pop()
            yield from parts
            block = fh.read(1 << 20)
            if not block:
                if rest:
                    yield rest
                return
            buf = rest + block

    for raw in lines():
        number += 1
        if first:
            first = False
            if raw.startswith(BOM):
                raw = raw[3:]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip(JSON_SPACE):
            continue
        yield parse_object(shown, number, raw)


def _iter_array(data: bytes, shown: str) -> Iterator[RawRecord]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{shown}: not UTF-8: {exc.reason} at byte {exc.start}") from exc
    decoder = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    pos = skip(text.index("[") + 1)
    line = 1 + text.count("\n", 0, pos)
    if pos < n and text[pos] == "]":
        return
    item = 0
    while True:
        item += 1
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{shown}:{exc.lineno}: invalid JSON array (item {item}): {exc.msg}"
            ) from exc
        except RecursionError as exc:
            # The item's end cannot be found without parsing it: the file fails as a whole.
            raise InputError(
                f"{shown}:{line}: invalid JSON array (item {item}): nested too deeply"
            ) from exc
        chunk = text[pos:end]
        if isinstance(value, dict):
            try:
                # orjson is the JSONL reader's parser: the same rules for both (no lone
                # surrogate such as \udc80, at most 1,024 levels of nesting).
                orjson.loads(chunk)
            except orjson.JSONDecodeError as exc:
                yield RawRecord(shown, line, chunk, None, f"invalid JSON: {exc.msg}")
            else:
                yield RawRecord(shown, line, chunk, value)
        else:
            why = f"expected a JSON object, got {_kind(value)}"
            yield RawRecord(shown, line, chunk, None, why)
        nxt = skip(end)
        if nxt < n and text[nxt] == ",":
            nxt = skip(nxt + 1)
            line += text.count("\n", pos, nxt)
            pos = nxt
            continue
        if nxt < n and text[nxt] == "]":
            if text[nxt + 1 :].strip():
                raise InputError(f"{shown}: text after the closing ']' of the JSON array")
            return
        lineno = 1 + text.count("\n", 0, nxt)
        raise InputError(f"{shown}:{lineno}: invalid JSON array: expected ',' or ']'")
