"""Pass 2: read the buckets in hash order and write train/valid/test and records.jsonl.

Each bucket becomes its rows per split and its records.jsonl entries on its own, in one
process or shared by output file between two (`Share`): each reads every bucket, forms and
writes its files in order, and hashes them as it goes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from array import array
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jarvis.dataset.recipe import RECORDS
from jarvis.dataset.spill import (
    AT_DIGITS,
    COPY_AT,
    PAYLOAD_AT,
    SEQ_AT,
    SEQ_BITS,
    TRAIN_JSON,
    Spill,
    block_needle,
    close_all,
    line_index,
    split_tail,
)
from jarvis.splits import SPLITS, TRAIN

if TYPE_CHECKING:
    from jarvis.dataset.retrieval import RagRows

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
    with_block: Sequence[int]  # per split: records whose RAG block is not empty (RAG rows)


@dataclass(frozen=True, slots=True)
class Share:
    """Which of pass 2's files one process forms and writes."""

    splits: frozenset[int]  # the split files (`SPLITS` indexes)
    records: bool  # records.jsonl

    def forms(self, s: int) -> bool:
        return s in self.splits


EVERYTHING = Share(frozenset(range(len(SPLITS))), records=True)
# Two processes: train's rows here; valid's, test's and records.jsonl's in the worker (about
# the same bytes at the usual split: 98 MB against 89 MB for 200,000 records).
TRAIN_ROWS = Share(frozenset({TRAIN}), records=False)
THE_REST = Share(frozenset(range(len(SPLITS))) - {TRAIN}, records=True)


class Maps:
    """What a bucket needs to know of the plan: seq -> unit, and each unit's split."""

    def __init__(self, units: list[array[int]], split_of: bytearray) -> None:
        self.units = units
        self.split_of = split_of
        self._flat: tuple[Any, Any, Any] | None = None

    def flat(self) -> tuple[Any, Any, Any]:
        """numpy views for a whole bucket at once: every task's units end to end, where each
        task's start there, and the split per unit."""
        if self._flat is None:
            import numpy as np

            lengths = np.fromiter((len(u) for u in self.units), np.int64, len(self.units))
            starts = np.zeros(len(self.units) + 1, np.int64)
            np.cumsum(lengths, out=starts[1:])
            flat = np.frombuffer(b"".join(u.tobytes() for u in self.units) or b"", np.int32)
            self._flat = flat, starts, np.frombuffer(bytes(self.split_of), np.uint8)
        return self._flat

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


def _hex(digits: Any) -> Any:
    """Rows of hex digit values (0-15, one column each) as unsigned 64-bit numbers."""
    import numpy as np

    value = np.zeros(len(digits), np.uint64)
    for column in digits.T.astype(np.uint64):
        value = (value << 4) | column
    return value


def bucket_output(
    data: bytearray,
    maps: Maps,
    rag: RagRows | None,
    rag_field: str | None,
    share: Share = EVERYTHING,
    row_head: bytes = b"",
) -> Bucket:
    """Form one bucket's output from its spilled lines (`Spill.bucket_bytes`, any order):
    the files of `share` (the others' parts are left empty).

    The lines are ordered and mapped to units and splits as whole arrays: a line's place is
    its 32 hex digits (shuffle key, seq, copy), the same order as sorting the lines. Each
    output line is then one slice of `data` (a row, or a records.jsonl entry with its split
    written in place: `data` is edited); a row after `row_head`, which the spill left out.
    """
    import numpy as np

    if not data:
        return _EMPTY
    raw = np.frombuffer(data, np.uint8)
    starts, length, row_length = line_index(data)
    seq = _hex(_digits(raw, starts + SEQ_AT, COPY_AT - SEQ_AT)).astype(np.int64)
    copy = _hex(_digits(raw, starts + COPY_AT, PAYLOAD_AT - 1 - COPY_AT))
    order = np.lexsort((copy, seq, _hex(_digits(raw, starts, SEQ_AT))))
    flat, task_start, split_of = maps.flat()
    seq = seq[order]
    unit = flat[task_start[seq >> SEQ_BITS] + (seq & ((1 << SEQ_BITS) - 1))]
    kept = unit >= 0  # else a duplicate, or a record the main process rejected
    order, unit = order[kept], unit[kept]
    split = split_of[unit]
    repeat = copy[order] != 0
    wanted = ~repeat | (split == TRAIN)  # a --repeat copy goes to train only
    order, unit, split, repeat = order[wanted], unit[wanted], split[wanted], repeat[wanted]
    row_start = starts[order] + PAYLOAD_AT
    row_end, line_end = row_start + row_length[order], starts[order] + length[order] - 1
    record = ~repeat
    entry = row_end[record] + 1 + AT_DIGITS
    quote = entry + _hex(_digits(raw, entry - AT_DIGITS, AT_DIGITS)).astype(np.int64)
    names, lines = split[record], line_end[record] + 1
    view = memoryview(data)
    if rag is not None:
        assert share is EVERYTHING  # rows re-rendered with exemplars: one process
        return _rag_output(view, rag, rag_field, unit, split, repeat, entry, quote, lines)
    rows: list[tuple[bytes | memoryview, int]] = []
    # "\n" + head, then each row's rest, every one followed by "\n" + head: one join, and the
    # first newline and the last head cut off (a view, not a copy).
    between = b"\n" + row_head
    for s in range(len(SPLITS)):
        if not share.forms(s):
            rows.append((b"", 0))
            continue
        mine = split == s
        a, b = row_start[mine].tolist(), row_end[mine].tolist()
        joined = between.join([b"", *[view[x:y] for x, y in zip(a, b, strict=True)], b""])
        rows.append((memoryview(joined)[1 : len(joined) - len(row_head)], len(a)))
    if not share.records:
        return Bucket(rows, (b"", 0), _NONE)
    entry = _name_splits(raw, entry, quote, names)
    entries = [view[x:y] for x, y in zip(entry.tolist(), lines.tolist(), strict=True)]
    return Bucket(rows, (b"".join(entries), len(entries)), _NONE)


_NONE = (0,) * len(SPLITS)
_EMPTY = Bucket([(b"", 0)] * len(SPLITS), (b"", 0), _NONE)


def _digits(raw: Any, at: Any, n: int) -> Any:
    """The `n` hex digits at each of `at` as digit values (0-15), one row each."""
    import numpy as np

    digits = raw[at[:, None] + np.arange(n)] - 48
    digits -= np.uint8(39) * (digits > 9)  # a-f
    return digits


def _name_splits(raw: Any, entry: Any, quote: Any, names: Any) -> Any:
    """Write each entry's split over the "train" it was spilled with (in `raw`, writable);
    returns where each entry now starts.

    "valid" has train's length. "test" is one byte shorter: the entry's part before it moves
    one byte right, over the last digit of its place, and starts there.
    """
    import numpy as np

    out = entry.copy()
    for s, name in enumerate(SPLITS):
        mine = names == s
        if s == TRAIN or not mine.any():
            continue
        word = np.frombuffer(name.encode(), np.uint8)
        shift = len(TRAIN_JSON) - 2 - len(word)  # "test": 1
        if shift:
            head, at = entry[mine], quote[mine] + 1  # up to and with the opening quote
            index = _ranges(head, at - head)
            raw[index + shift] = raw[index]
            out[mine] = head + shift
        raw[(quote[mine] + 1 + shift)[:, None] + np.arange(len(word))] = word
    return out


def _ranges(starts: Any, lengths: Any) -> Any:
    """Every index of the ranges [start, start + length), ranges in the order given."""
    import numpy as np

    total = int(lengths.sum())
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(total)


def _rag_output(
    view: memoryview,
    rag: RagRows,
    rag_field: str | None,
    unit: Any,
    split: Any,
    repeat: Any,
    entry: Any,
    quote: Any,
    lines: Any,
) -> Bucket:
    """`bucket_output` where rows were re-rendered with their exemplars: each kept line's
    row and record come from `rag`, its id and tag from the spill (`entry`, `quote` and
    `lines` are the record lines')."""
    needle = block_needle(rag_field)
    with_block = [0] * len(SPLITS)
    rows: list[list[bytes]] = [[] for _ in SPLITS]
    entries: list[bytes] = []
    tails = quote + len(TRAIN_JSON)
    spans = zip(entry.tolist(), tails.tolist(), (lines - 1).tolist(), strict=True)
    for u, s, copy in zip(unit.tolist(), split.tolist(), repeat.tolist(), strict=True):
        row, record = rag.get(u)
        if not copy:
            head, tail, end = next(spans)
            tag, _ = split_tail(bytes(view[tail:end]))
            head_part = bytes(view[head : tail - len(TRAIN_JSON)])
            entries.append(b'%s%s%s,"record":%s}' % (head_part, _SPLIT_JSON[s], tag, record))
            if needle is not None and needle in record:
                with_block[s] += 1
        rows[s].append(row)
    return Bucket([(_lines(r), len(r)) for r in rows], (_lines(entries), len(entries)), with_block)


def _lines(items: list[bytes]) -> bytes:
    # One join with the last newline (joining, then adding it, copies the bucket twice).
    return b"\n".join([*items, b""]) if items else b""


def write_buckets(
    tmp: Path,
    spill: Spill,
    maps: Maps,
    rag: RagRows | None,
    rag_field: str | None,
    has_rows: list[bool],
    share: Share = EVERYTHING,
    *,
    reader: int = 0,
    keep: bool = False,
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """Form every bucket in order and write the files of `share` into `tmp`.

    Args:
        has_rows: per split, whether the plan gives it rows (else it has no file).
        reader: which of the processes sharing the spill this is (`Spill.share`).
        keep: leave the spill files (shared without links: removed with the folder).

    Returns:
        The files written (sha256, rows) and, with `rag`, per split how many records carry
        a non-empty RAG block, counted as they are written (else zeros: pass 1 counts them).
    """
    data = functools.partial(spill.bucket_bytes, keep=keep, reader=reader)
    buckets = (
        bucket_output(data(i), maps, rag, rag_field, share, spill.row_head)
        for i in range(spill.buckets_n)
    )
    wanted = [has and share.forms(s) for s, has in enumerate(has_rows)]
    return _pass_two(tmp, buckets, wanted, share.records)


def _pass_two(
    tmp: Path, buckets: Iterable[Bucket], wanted: list[bool], with_records: bool
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """Write the `wanted` split files, and records.jsonl `with_records`, from `buckets`
    (each bucket's output, in bucket order)."""
    writers = [
        _Writer(tmp / f"{name}.jsonl") if want else None
        for name, want in zip(SPLITS, wanted, strict=True)
    ]
    records = _Writer(tmp / RECORDS) if with_records else None
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
    if records is not None:
        files[RECORDS] = records.close()
    return files, with_block


def _write_bucket(bucket: Bucket, writers: list[_Writer | None], records: _Writer | None) -> None:
    for s, (data, count) in enumerate(bucket.rows):
        writer = writers[s]
        if count:
            assert writer is not None
            writer.write(data, count)
    if records is not None:
        records.write(*bucket.records)


def merge_files(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The files of processes that shared pass 2, in the order one process writes them
    (the split files, then records.jsonl)."""
    found = {name: info for files in parts for name, info in files.items()}
    names = [f"{name}.jsonl" for name in SPLITS] + [RECORDS]
    return {name: found[name] for name in names if name in found}
