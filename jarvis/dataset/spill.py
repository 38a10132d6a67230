"""Shuffle buckets on disk: every rendered row, written once by whichever process rendered it.

A line is `<shuffle hash:16 hex><seq:12 hex><copy:4 hex>\\t<payload>`. The bucket is the top
bits of the hash, so reading the buckets in order, each sorted, gives every line in hash
order. A record's payload (copy 0) is `<row>\\t<at:8 hex><entry>`: its records.jsonl entry
already formed, `{"id":<id>,"split":"train","tag":<tag>,"record":<record>}`, with `at` the
place of the split's opening quote in it. Pass 2 alone knows the split: an entry of the
train split is then one slice, and another split's name is written over "train" in place
(JSON escapes every tab and newline inside the parts). A `--repeat` copy's payload is the
row. A process writes a task's lines to a bucket file as one block that leads with each
line's length and its row's length (`SpillWriter`), so pass 2 finds them without reading
for newlines. `seq` is the record's place in the input (task number, index in the task): the main
process maps it to a unit (a kept record) or drops it (a duplicate, a record it rejected), so
workers can spill before the main process has decided.
"""

from __future__ import annotations

import os
import struct
from array import array
from binascii import hexlify
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

SEQ_BITS = 24  # records per task, at most (a task is about a megabyte of input)
# Where a line's parts start: the shuffle key's 16 hex digits, seq's 12, copy's 4, a tab.
SEQ_AT, COPY_AT, PAYLOAD_AT = 16, 28, 33
_MIN_BUCKETS, _MAX_BUCKETS = 32, 256
_SPLIT_AT = len(b'{"id":,"split":')  # the split's quote in an entry, less the id's JSON
AT_DIGITS = 8  # hex digits of that place, before the entry
TRAIN_JSON = b'"train"'  # the split an entry is spilled with
# Spilled lines (row, record, keys) take up to about three times the input's bytes (2.3 for
# the benchmark's chat rows, spilled without their head; 1.9 for long records).
_SPILL_PER_INPUT_BYTE = 3


def bucket_count(input_bytes: int) -> int:
    """Buckets for an input of this size: each at most about 4 MB, in memory a few at a
    time."""
    n = _MIN_BUCKETS
    while n < _MAX_BUCKETS and input_bytes * _SPILL_PER_INPUT_BYTE / n > 4 << 20:
        n *= 2
    return n


def close_all(files: Sequence[IO[bytes]]) -> None:
    """Close every file even when one fails (a full disk fails the flush); raise the first."""
    first: OSError | None = None
    for fh in files:
        try:
            fh.close()
        except OSError as exc:
            first = first or exc
    if first is not None:
        raise first


class SpillWriter:
    """One process's set of bucket files.

    A task's lines go to each bucket's file as one block, `[lines, bytes]` (two 64-bit
    numbers), then per line its length and its row's length (32 bits each), then the lines,
    padded to 8 bytes: pass 2 finds every line and row from the numbers, without a scan of
    the bytes for newlines and tabs (`line_index`).

    A row is spilled without `row_head`, the bytes every row starts with (`Spill`).
    """

    def __init__(self, folder: Path, buckets: int, row_head: bytes = b"") -> None:
        folder.mkdir(parents=True)
        self.row_head = row_head
        # The bucket is the top bits of the 8-byte shuffle key, all in its first byte.
        assert buckets <= 256
        self.shift = 8 - (buckets.bit_length() - 1)
        self.files: list[IO[bytes]] = [
            (folder / f"{i:03d}").open("wb", buffering=0) for i in range(buckets)
        ]
        self.lines: list[list[bytes]] = [[] for _ in range(buckets)]
        self.sizes: list[array[int]] = [array("I") for _ in range(buckets)]

    def add(self, key: bytes, seq: int, copy: int, row: bytes) -> None:
        """A `--repeat` copy of a row (train only), under its own 8-byte shuffle key."""
        rest = self._rest(row)
        line = b"%s%012x%04x\t%s\n" % (hexlify(key), seq, copy, rest)
        bucket = key[0] >> self.shift
        self.lines[bucket].append(line)
        self.sizes[bucket].extend((len(line), len(rest)))

    def add_record(
        self, key: bytes, seq: int, row: bytes, rid: bytes, tag: bytes, record: bytes
    ) -> None:
        """A record's copy 0: the row, then where its entry's split is, then its
        records.jsonl entry as if in train (formatted once, no payload joined first)."""
        rest = self._rest(row)
        line = b'%s%012x0000\t%s\t%08x{"id":%s,"split":"train","tag":%s,"record":%s}\n' % (
            hexlify(key), seq, rest, _SPLIT_AT + len(rid), rid, tag, record,
        )  # fmt: skip
        bucket = key[0] >> self.shift
        self.lines[bucket].append(line)
        self.sizes[bucket].extend((len(line), len(rest)))

    def _rest(self, row: bytes) -> bytes:
        """The row without `row_head` (which every row starts with: checked)."""
        assert row.startswith(self.row_head)
        return row[len(self.row_head) :]

    def flush(self) -> None:
        """Write what was added since the last flush, a block per bucket."""
        for fh, lines, sizes in zip(self.files, self.lines, self.sizes, strict=True):
            if lines:
                size = sum(sizes[::2])
                head = array("Q", (len(lines), size)).tobytes()
                fh.write(b"".join([head, sizes.tobytes(), *lines, bytes(-size % 8)]))
                lines.clear()
                del sizes[:]

    def close(self) -> None:
        close_all(self.files)


def line_index(data: bytes | bytearray) -> tuple[Any, Any, Any]:
    """Where the lines of a bucket's blocks (`SpillWriter`) are, in the order written:
    each line's start, its length (with its newline) and its row's length, as numpy arrays.
    """
    import numpy as np

    blocks: list[tuple[int, int]] = []  # (where its numbers start, lines)
    starts: list[int] = []  # where its lines start
    at = 0
    while at < len(data):
        lines, size = struct.unpack_from("=QQ", data, at)
        blocks.append((at + 16, lines))
        starts.append(at + 16 + 8 * lines)
        at += 16 + 8 * lines + size + (-size % 8)
    if not blocks:
        none = np.zeros(0, np.int64)
        return none, none, none
    sizes = np.concatenate(
        [np.frombuffer(data, np.uint32, 2 * n, where) for where, n in blocks]
    ).astype(np.int64)
    length, row = sizes[0::2], sizes[1::2]
    counts = np.array([n for _, n in blocks], np.int64)
    # A line starts where its block's lines do, plus the lengths before it in that block.
    before = np.cumsum(length) - length
    first = np.repeat(before[np.cumsum(counts) - counts], counts)
    start = np.repeat(np.array(starts, np.int64), counts) + before - first
    return start, length, row


class Spill:
    """The spill folder: one `SpillWriter` per process, read back merged by bucket."""

    def __init__(
        self, folder: Path, buckets: int, *, create: bool = True, row_head: bytes = b""
    ) -> None:
        if create:  # a worker opens the folder the main process made
            folder.mkdir()
        self.folder = folder
        self.buckets_n = buckets
        # What every row starts with (a chat row's system message, `row.row_head`): left out
        # of the spill (28% of its bytes for the benchmark's records), written back by pass 2.
        self.row_head = row_head
        # seq -> unit, one array per task (-1: not kept), filled by the main process.
        self.units: list[array[int]] = []
        self._folders: list[Path] | None = None

    def writer(self, name: str) -> SpillWriter:
        return SpillWriter(self.folder / name, self.buckets_n, self.row_head)

    def bucket(self, i: int, *, keep: bool = False) -> list[bytes]:
        """Bucket `i`'s lines from every process, sorted, without their newlines (and
        deleted unless `keep`)."""
        data = bytes(self.bucket_bytes(i, keep=keep))
        start, length, _ = line_index(data)
        spans = zip(start.tolist(), length.tolist(), strict=True)
        return sorted(data[a : a + n - 1] for a, n in spans)

    def _writers(self) -> list[Path]:
        """The processes' folders, listed once: pass 1 is over when buckets are read."""
        if self._folders is None:
            self._folders = sorted(f for f in self.folder.iterdir() if f.is_dir())
        return self._folders

    def share(self, readers: int) -> bool:
        """Let `readers` processes each read (and delete) every bucket: a hard link per file
        for each reader but the first (`bucket_bytes(reader=)`). Returns False where the
        file system has no hard links: every reader then reads the files themselves and
        keeps them (`keep`; they are removed with the folder).
        """
        made: list[Path] = []
        try:
            for folder in self._writers():
                for path in sorted(folder.glob("[0-9][0-9][0-9]")):
                    for reader in range(1, readers):
                        link = path.with_name(f"{path.name}.{reader}")
                        os.link(path, link)
                        made.append(link)
        except OSError:
            for link in made:
                link.unlink()
            return False
        return True

    def bucket_bytes(self, i: int, *, keep: bool = False, reader: int = 0) -> bytearray:
        """Bucket `i`'s blocks from every process as they were written (`line_index` finds
        their lines), in one buffer that pass 2 may edit (and the files deleted unless
        `keep`); `reader`: which of the processes that `share` the buckets reads."""
        name = f"{i:03d}" if reader == 0 else f"{i:03d}.{reader}"
        paths = [p for p in (f / name for f in self._writers()) if p.is_file()]
        sizes = [p.stat().st_size for p in paths]
        # Read straight into one buffer: no join of the processes' parts, no second copy.
        data = bytearray(sum(sizes))
        view, at = memoryview(data), 0
        for path, size in zip(paths, sizes, strict=True):
            with path.open("rb", buffering=0) as fh:
                got = fh.readinto(view[at : at + size])
            if got != size:
                raise OSError(f"{path}: read {got} of {size} bytes")
            at += size
            if not keep:
                path.unlink()
        view.release()
        return data

    def buckets(self, *, keep: bool = False) -> Iterator[list[bytes]]:
        """Yield each bucket's lines, sorted, in hash order."""
        for i in range(self.buckets_n):
            yield self.bucket(i, keep=keep)

    def kept(self, *, keep: bool = False) -> Iterator[tuple[int, bool, bytes]]:
        """Yield (unit, is a repeat copy, payload) of every kept line, in shuffle order."""
        units = self.units
        mask = (1 << SEQ_BITS) - 1
        for lines in self.buckets(keep=keep):
            for line in lines:
                seq = int(line[SEQ_AT:COPY_AT], 16)
                unit = units[seq >> SEQ_BITS][seq & mask]
                if unit >= 0:
                    yield unit, line[COPY_AT : PAYLOAD_AT - 1] != b"0000", line[PAYLOAD_AT:]


def entry_parts(payload: bytes) -> tuple[bytes, bytes]:
    """A record line's payload (`Spill.kept`): its id's JSON and its record's JSON."""
    at = payload.index(b"\t") + 1 + AT_DIGITS
    split = at + int(payload[at - AT_DIGITS : at], 16)
    return payload[at + len(b'{"id":') : split - len(b',"split":')], split_tail(
        payload[split + len(TRAIN_JSON) :]
    )[1]


def split_tail(tail: bytes) -> tuple[bytes, bytes]:
    """An entry's part after the split, `,"tag":<tag>,"record":<record>}`, as its tag part
    (`,"tag":<tag>`) and its record's JSON."""
    # `,"record":` cannot occur inside the tag's JSON string (its quotes would be escaped).
    at = tail.index(b',"record":')
    return tail[:at], tail[at + len(b',"record":') : -1]


def block_needle(rag_field: str | None) -> bytes | None:
    """What marks a record whose RAG block is not empty. Sorted-key JSON: `"retrieved":[{`
    appears only for a non-empty list (inside a string value every quote is escaped)."""
    return None if rag_field is None else b'"%s":[{' % rag_field.encode()
