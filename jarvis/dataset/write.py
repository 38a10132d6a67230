"""Pass 2: read the buckets in hash order and write train/valid/test and records.jsonl.

Each bucket becomes its rows per split and its records.jsonl entries on its own, so buckets
can be formed in worker processes while this process appends them in order and hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
from array import array
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jarvis.dataset.recipe import RECORDS
from jarvis.dataset.spill import SEQ_BITS, Spill, close_all
from jarvis.splits import SPLITS, TRAIN

if TYPE_CHECKING:
    from jarvis.dataset.plan import _Plan
    from jarvis.dataset.retrieval import _RagRows

_SPLIT_JSON = [b'"%s"' % name.encode() for name in SPLITS]


class _Writer:
    """An output file that hashes and counts what it writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("wb", buffering=1 << 20)
        self.digest = hashlib.sha256()
        self.rows = 0

    def write(self, data: bytes | memoryview, rows: int) -> None:
        """Append `rows` whole lines."""
        if rows:
            self.fh.write(data)
            self.digest.update(data)
            self.rows += rows

    def close(self) -> dict[str, Any]:
        self.fh.close()
        return {"sha256": self.digest.hexdigest(), "rows": self.rows}


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket's output: per split its rows, then records.jsonl's entries, as bytes."""

    rows: list[tuple[bytes | memoryview, int]]  # per split: (lines, count)
    records: tuple[bytes | memoryview, int]
    with_block: list[int]  # per split: records whose RAG block is not empty

    def park(self, path: Path) -> ParkedBucket:
        """Write this output to `path` for the main process (megabytes go through a file
        in the page cache faster than through a pipe, and no thread there unpickles them)."""
        parts = [data for data, _ in self.rows] + [self.records[0]]
        with path.open("wb") as fh:
            for data in parts:
                fh.write(data)
        counts = [n for _, n in self.rows] + [self.records[1]]
        return ParkedBucket(path, [len(d) for d in parts], counts, self.with_block)


@dataclass(frozen=True, slots=True)
class ParkedBucket:
    """A bucket's output that a worker wrote to a file: where, and its parts' sizes."""

    path: Path
    sizes: list[int]
    counts: list[int]
    with_block: list[int]

    def load(self) -> Bucket:
        """The output, read back (and the file removed)."""
        data = memoryview(self.path.read_bytes())
        self.path.unlink()
        parts: list[bytes | memoryview] = []
        at = 0
        for size in self.sizes:
            parts.append(data[at : at + size])
            at += size
        pairs = list(zip(parts, self.counts, strict=True))
        return Bucket(pairs[:-1], pairs[-1], self.with_block)


class Maps:
    """What a bucket needs to know of the plan: seq -> unit, and each unit's split."""

    def __init__(self, units: list[array[int]], split_of: bytearray) -> None:
        self.units = units
        self.split_of = split_of

    def save(self, folder: Path) -> Path:
        """Write the maps for worker processes; returns the folder to `load` from."""
        folder.mkdir()
        with (folder / "units").open("wb") as fh:
            for units in self.units:
                units.tofile(fh)
        (folder / "lengths").write_bytes(array("q", (len(u) for u in self.units)).tobytes())
        (folder / "split").write_bytes(self.split_of)
        return folder

    @classmethod
    def load(cls, folder: Path) -> Maps:
        lengths = array("q")
        lengths.frombytes((folder / "lengths").read_bytes())
        flat = array("i")
        flat.frombytes((folder / "units").read_bytes())
        units, at = [], 0
        for n in lengths:
            units.append(flat[at : at + n])
            at += n
        return cls(units, bytearray((folder / "split").read_bytes()))


def bucket_output(
    lines: list[bytes], maps: Maps, rag: _RagRows | None, rag_field: str | None
) -> Bucket:
    """Form one sorted bucket's output lines."""
    units, split_of = maps.units, maps.split_of
    low = (1 << SEQ_BITS) - 1
    # Sorted-key JSON: `"retrieved":[{` appears only for a non-empty list (inside a string
    # value every quote is escaped, so it cannot match there).
    needle = b'"%s":[{' % rag_field.encode() if rag_field is not None else None
    with_block = [0] * len(SPLITS)
    rows: list[list[bytes]] = [[] for _ in SPLITS]
    entries: list[bytes] = []
    for line in lines:
        seq = int(line[16:28], 16)
        unit = units[seq >> SEQ_BITS][seq & low]
        if unit < 0:
            continue  # a duplicate, or a record the main process rejected
        s = split_of[unit]
        if line[28:32] != b"0000":  # a --repeat copy (its payload is the row): train only
            if s == TRAIN:
                rows[s].append(line[33:] if rag is None else rag.get(unit)[0])
            continue
        # One split of the line: its head (key, seq, copy), then the payload's fields (JSON
        # escapes every tab inside them; the record, last, is not scanned).
        _, row, rid, tag, record = line.split(b"\t", 4)
        if rag is not None:
            row, record = rag.get(unit)
        entries.append(
            b'{"id":%s,"split":%s,"tag":%s,"record":%s}' % (rid, _SPLIT_JSON[s], tag, record)
        )
        if needle is not None and needle in record:
            with_block[s] += 1
        rows[s].append(row)
    return Bucket([(_lines(r), len(r)) for r in rows], (_lines(entries), len(entries)), with_block)


def _lines(items: list[bytes]) -> bytes:
    # One join with the last newline (joining, then adding it, copies the bucket twice).
    return b"\n".join([*items, b""]) if items else b""


def _pass_two(
    tmp: Path, buckets: Iterable[Bucket], plan: _Plan
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """Write the split files and records.jsonl from `buckets` (each bucket's output, in
    bucket order).

    Returns:
        The files written (sha256, rows) and, per split, how many records carry a non-empty
        RAG block, counted as they are written.
    """
    writers = [
        _Writer(tmp / f"{name}.jsonl") if sum(plan.rows[s]) else None
        for s, name in enumerate(SPLITS)
    ]
    records = _Writer(tmp / RECORDS)
    with_block = [0] * len(SPLITS)
    try:
        # Writing and hashing a bucket (megabytes: both release the GIL) run in a thread while
        # this one forms the next; one bucket in flight, in order, and the thread is done
        # (`with`) before any file is closed.
        with ThreadPoolExecutor(1, thread_name_prefix="jarvis-write") as pool:
            pending: Future[None] | None = None
            for bucket in buckets:
                if pending is not None:
                    pending.result()
                pending = pool.submit(_write_bucket, bucket, writers, records)
                for s, n in enumerate(bucket.with_block):
                    with_block[s] += n
            if pending is not None:
                pending.result()
    except BaseException:
        with contextlib.suppress(OSError):
            close_all([w.fh for w in [*writers, records] if w is not None])
        raise
    files = {f"{name}.jsonl": w.close() for name, w in zip(SPLITS, writers, strict=True) if w}
    files[RECORDS] = records.close()
    return files, with_block


def _write_bucket(bucket: Bucket, writers: list[_Writer | None], records: _Writer) -> None:
    for s, (data, count) in enumerate(bucket.rows):
        writer = writers[s]
        if count:
            assert writer is not None
            writer.write(data, count)
    records.write(*bucket.records)


def serial_buckets(
    spill: Spill, maps: Maps, rag: _RagRows | None, rag_field: str | None
) -> Iterator[Bucket]:
    """Every bucket's output, formed in this process."""
    for lines in spill.buckets():
        yield bucket_output(lines, maps, rag, rag_field)
