"""Pass 2's bucket forming (`write.bucket_output`) against the plain reading of its lines."""

from __future__ import annotations

import hashlib
from array import array
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jarvis.dataset.spill import SEQ_BITS, Spill, entry_parts, line_index
from jarvis.dataset.write import Maps, bucket_output
from jarvis.splits import SPLITS, TRAIN

texts = st.text(st.characters(codec="utf-8"), max_size=12)
records = st.fixed_dictionaries(
    {"text": texts},
    optional={"retrieved": st.lists(st.fixed_dictionaries({"reply": texts}), max_size=2)},
)
HEAD = b'{"messages":[{"role":"system","content":"Be brief.\\n"},'  # what chat rows start with
spilled = st.lists(
    st.tuples(records, st.integers(0, 2), st.integers(0, 2), st.sampled_from(["a", "b.c", "d"])),
    min_size=0,
    max_size=40,
)


def expected(
    lines: list[bytes], units: list[array[int]], split_of: bytes, head: bytes
) -> tuple[list[bytes], bytes]:
    """What the bucket must hold, read line by line: sorted, then each kept line's row (its
    head, which the spill leaves out, then the rest) in its split (a repeat copy in train
    only) and each record's entry."""
    rows: list[list[bytes]] = [[] for _ in SPLITS]
    entries: list[bytes] = []
    for line in sorted(lines):
        seq = int(line[16:28], 16)
        unit = units[seq >> SEQ_BITS][seq & ((1 << SEQ_BITS) - 1)]
        if unit < 0:
            continue
        s, payload = split_of[unit], line[33:]
        if line[28:32] != b"0000":
            if s == TRAIN:
                rows[s].append(head + payload)
            continue
        row, spilled = payload.split(b"\t")
        entry = spilled[8:]  # after the 8 hex digits of where its split's quote is
        at = int(spilled[:8], 16)
        assert entry[at:].startswith(b'"train",')
        entries.append(entry[:at] + b'"%s"' % SPLITS[s].encode() + entry[at + len('"train"') :])
        rid, record = entry_parts(payload)  # what retrieval reads of a record line
        assert entry[:at] == b'{"id":%s,"split":' % rid and entry.endswith(
            b',"record":%s}' % record
        )
        rows[s].append(head + row)
    lines_of = [b"".join(r + b"\n" for r in rs) for rs in rows]
    return lines_of, b"".join(e + b"\n" for e in entries)


@settings(max_examples=80, deadline=None)
@given(spilled, st.data())
def test_a_bucket_holds_what_its_sorted_lines_say(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[tuple[dict[str, Any], int, int, str]],
    data: st.DataObject,
) -> None:
    folder = tmp_path_factory.mktemp("spill")
    head = data.draw(st.sampled_from([b"", HEAD]))
    spill = Spill(folder / "spill", 32, row_head=head)
    writers = [spill.writer("main"), spill.writer("w1")]  # two processes' files
    units: list[array[int]] = [array("i") for _ in range(3)]  # three tasks
    try:
        for n, (record, copies, task, tag) in enumerate(items):
            seq = task << SEQ_BITS | len(units[task])
            units[task].append(data.draw(st.sampled_from([-1, n])))  # -1: a dropped duplicate
            text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            made = hashlib.sha256(text).hexdigest()[:16]
            rid = orjson.dumps(data.draw(st.sampled_from([made, made * 9]) | texts))  # own ids
            row = head + orjson.dumps({"messages": [{"role": "user", "content": record["text"]}]})
            writer = writers[n % 2]
            # Keys whose first byte is 3: all in bucket 0 of 32 (its top 5 bits); some equal,
            # as a duplicate's are, so that seq and copy order them.
            writer.add_record(_key(b"%d" % (n % 5)), seq, row, rid, orjson.dumps(tag), text)
            for c in range(1, copies + 1):
                writer.add(_key(b"c%d" % (n % 3)), seq, c, row)
            if n % 3 == 2:  # a block per flush, as a task's end writes one
                writer.flush()
        for writer in writers:
            writer.flush()
    finally:
        for writer in writers:
            writer.close()
    lines = spill.bucket(0, keep=True)
    assert len(lines) == sum(1 + copies for _, copies, _, _ in items)  # every line written
    assert not head or not any(head in line for line in lines)  # left out, put back below
    split_of = bytes(data.draw(st.sampled_from([0, 1, 2])) for _ in items)
    want_rows, want_entries = expected(lines, units, split_of, head)
    maps = Maps(units, bytearray(split_of))
    got = bucket_output(spill.bucket_bytes(0), maps, None, None, row_head=head)
    assert [bytes(r) for r, _ in got.rows] == want_rows
    assert [n for _, n in got.rows] == [r.count(b"\n") for r in want_rows]
    assert bytes(got.records[0]) == want_entries
    assert got.records[1] == want_entries.count(b"\n")
    assert not any(folder.rglob("000"))  # the bucket's files are consumed


def _key(seed: bytes) -> bytes:
    return b"\x03" + hashlib.sha256(seed).digest()[:7]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=40), max_size=6), max_size=8))
def test_the_blocks_of_a_bucket_give_back_every_line_written(
    tmp_path_factory: pytest.TempPathFactory, tasks: list[list[bytes]]
) -> None:
    # Lines of any length in tasks (a block per flush) from two processes, read back in the
    # order written, with each row's length, without looking for newlines in them.
    folder = tmp_path_factory.mktemp("spill")
    spill = Spill(folder / "spill", 32)
    writers = [spill.writer("main"), spill.writer("w1")]
    written: dict[str, list[tuple[bytes, int]]] = {"main": [], "w1": []}
    try:
        for n, rows in enumerate(tasks):
            name = ["main", "w1"][n % 2]
            for m, row in enumerate(rows):
                key = _key(b"%d.%d" % (n, m))
                writers[n % 2].add(key, n << SEQ_BITS | m, 1, row)
                written[name].append(
                    (b"%s%012x0001\t%s\n" % (key.hex().encode(), n << SEQ_BITS | m, row), len(row))
                )
            writers[n % 2].flush()
    finally:
        for writer in writers:
            writer.close()
    data = spill.bucket_bytes(0)
    start, length, row = line_index(data)
    got = [(bytes(data[a : a + n]), r) for a, n, r in zip(start, length, row, strict=True)]
    assert got == written["main"] + written["w1"]  # the processes' files in name order


def test_shared_buckets_are_read_whole_by_each_reader_and_freed_by_the_second(
    tmp_path: Path,
) -> None:
    # Two readers of pass 2: each gets every line of a bucket, and deletes only its own name
    # of the files, so a bucket's disk is freed once both have read it.
    spill = Spill(tmp_path / "spill", 32)
    writers = [spill.writer("main"), spill.writer("w1")]
    for n, writer in enumerate(writers):
        for m in range(5):
            writer.add(_key(b"%d.%d" % (n, m)), n << SEQ_BITS | m, 1, b'{"row":%d}' % m)
        writer.flush()
        writer.close()
    assert spill.share(2)
    first = bytes(spill.bucket_bytes(0, reader=0))
    files = sorted(p.name for p in (tmp_path / "spill").rglob("000*"))
    assert files == ["000.1", "000.1"]  # the second reader's links, one per process
    assert bytes(spill.bucket_bytes(0, reader=1)) == first
    assert not any((tmp_path / "spill").rglob("000*"))
    assert len(line_index(first)[0]) == 10
