"""Between the passes, for a contract with `retrieval:`: build the exemplar store from the
train split and re-render every row with its exemplars (leave-one-out).
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import IO, Any

import orjson

from jarvis.contract import Contract
from jarvis.dataset.plan import SplitPlan, share_of
from jarvis.dataset.recipe import Recipe
from jarvis.dataset.records import PassOneState
from jarvis.dataset.row import RowRenderer, prefix_error
from jarvis.dataset.spill import Spill, entry_parts
from jarvis.errors import (
    TokenizationError,
)
from jarvis.splits import SPLITS, TRAIN

# --- between the passes: retrieval (a contract with a `retrieval:` block) -------------------

EXEMPLARS = "exemplars.sqlite"
_BATCH = 512  # rows tokenized together (the fast tokenizer's batch call)


class RagRows:
    """Each record's row and record re-rendered with its exemplars, in a temp file by unit."""

    def __init__(self, path: Path, units: int) -> None:
        self.path = path
        self.fh: IO[bytes] = path.open("w+b")
        self.start = array("Q", [0]) * units
        self.length = array("I", [0]) * units
        self.end = 0

    def put(self, unit: int, row: bytes, record: bytes) -> None:
        data = row + b"\t" + record
        self.fh.write(data)
        self.start[unit], self.length[unit] = self.end, len(data)
        self.end += len(data)

    def get(self, unit: int) -> tuple[bytes, bytes]:
        self.fh.seek(self.start[unit])
        row, _, record = self.fh.read(self.length[unit]).partition(b"\t")
        return row, record

    def close(self) -> None:
        self.fh.close()


def retrieve_rows(
    tmp: Path,
    recipe: Recipe,
    contract: Contract,
    renderer: RowRenderer,
    spill: Spill,
    state: PassOneState,
    plan: SplitPlan,
) -> tuple[RagRows, dict[str, Any]]:
    """Build the exemplar store from the train split, then fill every record's RAG block.

    Leave-one-out for train rows (never the record itself, its thread, or its own reply);
    valid and test rows retrieve exactly as a runtime prompt does (their threads are not in
    the store). Returns the re-rendered rows and the manifest's `retrieval` block.
    """
    from jarvis.rag.retrieve import exemplar_of, retrieve
    from jarvis.rag.store import ExemplarStore, build_store

    spec = contract.retrieval
    assert spec is not None and contract.retrieval_key is not None
    units = []
    for unit, copy, payload in spill.kept(keep=True):
        if not copy:
            rid, record = entry_parts(payload)
            units.append((unit, orjson.loads(rid), record))
    items = []
    for unit, rid, record in units:
        if plan.split_of[unit] == TRAIN:
            own = exemplar_of(contract, rid, orjson.loads(record))
            if own is not None:
                items.append(own)
    fingerprint = build_store(
        tmp / EXEMPLARS, items, contract=contract.name, key=contract.retrieval_key,
        built_by=f"jarvis render-dataset --contract {contract.ref} (train split)",
    )  # fmt: skip
    rows = RagRows(spill.folder / "rag", len(state.tag_of))
    with_exemplars = [0] * len(SPLITS)
    shown = [0] * len(SPLITS)
    max_len = recipe.max_seq_length
    batch: list[tuple[int, str, bytes, dict[str, Any], list[dict[str, str]], int]] = []

    def flush() -> None:
        counted = (
            renderer.tokens_many([(b[4], b[2]) for b in batch])
            if renderer.tokenizer is not None
            else [None] * len(batch)
        )
        for (unit, rid, row, record, _, found), tokens in zip(batch, counted, strict=True):
            if tokens is not None:
                full, prompt = tokens
                if len(full) > max_len:
                    raise TokenizationError(
                        f"record {rid!r}: with its {found} exemplars the row has "
                        f"{len(full)} tokens, more than --max-seq-length {max_len} (raise it, "
                        f"or lower the contract's retrieval.k)"
                    )
                problem = prefix_error(renderer, f"record {rid!r}", prompt, full)
                if problem is not None:
                    raise TokenizationError(problem)
                state.tokens_of[unit] = len(full)
            rows.put(unit, row, orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
        batch.clear()

    try:
        with ExemplarStore(tmp / EXEMPLARS) as store:
            for unit, rid, raw_record in units:
                s = plan.split_of[unit]
                record = orjson.loads(raw_record)
                found = retrieve(contract, store, record, leave_out=rid if s == TRAIN else None)
                if found:
                    record[spec.field] = found
                    with_exemplars[s] += 1
                    shown[s] += len(found)
                row, _, messages = renderer.render(contract.validate(record), rid)
                batch.append((unit, rid, row, record, messages, len(found)))
                if len(batch) >= _BATCH:
                    flush()
            flush()
    except BaseException:
        rows.close()  # the run fails: the temp file goes with the partial folder
        raise
    plan.tokens = [array("I") for _ in SPLITS]
    for r in range(len(state.tag_of)):
        plan.tokens[plan.split_of[r]].append(state.tokens_of[r])
    splits = {}
    for s, name in enumerate(SPLITS):
        records = sum(plan.records[s])
        if records:
            splits[name] = {
                "rows_with_exemplars": share_of(with_exemplars[s], records),
                "mean_exemplars": round(shown[s] / records, 4),
            }
    info = {
        "store": EXEMPLARS,
        "fingerprint": fingerprint,
        "exemplars": len(items),
        "key": contract.retrieval_key,
        "config": spec.model_dump(mode="json"),
        "splits": splits,
    }
    return rows, info
