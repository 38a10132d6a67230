"""Pass 2: read the buckets in hash order and write train/valid/test and records.jsonl."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from jarvis.dataset.plan import _Plan
from jarvis.dataset.recipe import RECORDS
from jarvis.dataset.retrieval import _RagRows
from jarvis.dataset.spill import Spill, close_all
from jarvis.splits import SPLITS, TRAIN

# --- pass 2 --------------------------------------------------------------------------------


class _Writer:
    """An output file that hashes and counts what it writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("wb", buffering=1 << 20)
        self.digest = hashlib.sha256()
        self.rows = 0

    def write(self, line: bytes) -> None:
        self.fh.write(line)
        self.digest.update(line)
        self.rows += 1

    def close(self) -> dict[str, Any]:
        self.fh.close()
        return {"sha256": self.digest.hexdigest(), "rows": self.rows}


def _pass_two(
    tmp: Path, spill: Spill, plan: _Plan, rag: _RagRows | None, rag_field: str | None
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """Write the split files and records.jsonl.

    Returns:
        The files written (sha256, rows) and, per split, how many records carry a non-empty
        `rag_field` (the RAG block), counted as they are written.
    """
    writers = [
        _Writer(tmp / f"{name}.jsonl") if sum(plan.rows[s]) else None
        for s, name in enumerate(SPLITS)
    ]
    records = _Writer(tmp / RECORDS)
    try:
        return _write_splits(spill, plan, writers, records, rag, rag_field)
    except BaseException:
        with contextlib.suppress(OSError):
            close_all([w.fh for w in [*writers, records] if w is not None])
        raise


def _write_splits(
    spill: Spill,
    plan: _Plan,
    writers: list[_Writer | None],
    records: _Writer,
    rag: _RagRows | None,
    rag_field: str | None,
) -> tuple[dict[str, dict[str, Any]], list[int]]:
    split_json = [b'"%s"' % name.encode() for name in SPLITS]
    split_of = plan.split_of
    # Sorted-key JSON: `"retrieved":[{` appears only for a non-empty list (inside a string
    # value every quote is escaped, so it cannot match there).
    needle = b'"%s":[{' % rag_field.encode() if rag_field is not None else None
    with_block = [0] * len(SPLITS)
    for unit, copy, payload in spill.kept():
        s = split_of[unit]
        if copy and s != TRAIN:
            continue
        if copy:
            row = payload if rag is None else rag.get(unit)[0]
        else:
            row, rid, tag, record = payload.split(b"\t")
            if rag is not None:
                row, record = rag.get(unit)
            records.write(
                b'{"id":%s,"split":%s,"tag":%s,"record":%s}\n' % (rid, split_json[s], tag, record)
            )
            if needle is not None and needle in record:
                with_block[s] += 1
        writer = writers[s]
        assert writer is not None
        writer.write(row + b"\n")
    files = {f"{name}.jsonl": w.close() for name, w in zip(SPLITS, writers, strict=True) if w}
    files[RECORDS] = records.close()
    return files, with_block
