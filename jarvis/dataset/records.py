"""Pass 1, the main process's part: cut the inputs into tasks, have them scanned (here or in
worker processes: `workers`, `scan`), and commit their results strictly in input order:
rejects, duplicates, explicit ids, token limits, tags and groups. Per unique record only a
few numbers stay in memory.
"""

from __future__ import annotations

import hashlib
import itertools
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from jarvis.contract import Contract
from jarvis.dataset import scan
from jarvis.dataset.dedup import GroupIds, SeenSet
from jarvis.dataset.recipe import SHOWN_ERRORS, Recipe
from jarvis.dataset.row import RowRenderer
from jarvis.dataset.scan import Scanned, Task, raw_text
from jarvis.dataset.spill import Spill
from jarvis.dataset.workers import Workers
from jarvis.errors import ContractError, DatasetError, InputError, TokenizationError
from jarvis.files import sha256_file
from jarvis.inputs import DEFAULT_TAG, InputSpec, RawRecord, iter_file, plain_lines
from jarvis.splits import unit_key

_RAW_CHUNK = 512  # records per task for inputs the main process reads itself


@dataclass
class InputStats:
    """One input file's counts for the manifest."""

    path: str
    tag: str
    sha256: str
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0


@dataclass
class PassOneState:
    """What pass 1 keeps per unique record: a few numbers in compact arrays."""

    tags: list[str]
    tag_of: array[int] = field(default_factory=lambda: array("H"))
    group_of: array[int] = field(default_factory=lambda: array("i"))
    key_of: array[int] = field(default_factory=lambda: array("Q"))
    checks_of: array[int] = field(default_factory=lambda: array("Q"))
    tokens_of: array[int] = field(default_factory=lambda: array("I"))
    blocked: array[int] = field(default_factory=lambda: array("I"))  # units: RAG block
    seen: SeenSet = field(default_factory=SeenSet)
    ids: SeenSet = field(default_factory=SeenSet)
    groups: GroupIds = field(default_factory=GroupIds)  # ids, and keys by id
    inputs: list[InputStats] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)
    reject_count: int = 0
    overlength: int = 0
    duplicates: int = 0
    total: int = 0


def _reject(
    state: PassOneState, out: IO[bytes], file: str, line: int, reason: str,
    raw: tuple[str, str | None], **extra: Any,
) -> None:  # fmt: skip
    state.reject_count += 1
    if len(state.rejects) < SHOWN_ERRORS:
        state.rejects.append(f"{file}:{line}: {reason}")
    text, b64 = raw
    entry = {"file": file, "line": line, "reason": reason, **extra, "raw": text}
    if b64 is not None:
        # Not UTF-8: `raw` shows it readably (U+FFFD), `raw_base64` keeps it byte for byte.
        entry["raw_base64"] = b64
    out.write(orjson.dumps(entry) + b"\n")


# --- tasks --------------------------------------------------------------------------------


def input_order(files: list[tuple[InputSpec, Path]]) -> list[tuple[InputSpec, Path]]:
    """The inputs in processing order, which numbers the tasks.

    A record given under several tags keeps the first tag by name (`default` last), whatever
    the order of the --input options: duplicates are dropped in this order.
    """
    return sorted(files, key=lambda f: (f[0].tag == DEFAULT_TAG, f[0].tag, str(f[1])))


def file_tasks(
    file: int, path: Path, tag: str, number: Callable[[], int], item: InputStats
) -> Iterator[tuple[Task, bytes | None]]:
    """Cut one file into tasks; sets `item.sha256`. Plain JSONL is cut at line boundaries
    and hashed on the way (one read); other formats are read here, record by record."""
    shown = str(path)
    if not plain_lines(path):
        item.sha256 = sha256_file(path)
        raws: list[RawRecord] = []
        for raw in iter_file(path, shown):
            raws.append(raw)
            if len(raws) == _RAW_CHUNK:
                yield Task(number(), file, shown, tag, raws=raws), None
                raws = []
        if raws:
            yield Task(number(), file, shown, tag, raws=raws), None
        return
    digest = hashlib.sha256()
    start, line = 0, 1
    size = path.stat().st_size
    with path.open("rb") as fh:
        while block := fh.read(_task_size(size - start)):
            if not block.endswith(b"\n"):
                block += fh.readline()
            digest.update(block)
            yield Task(number(), file, shown, tag, start, len(block), line), block
            start += len(block)
            line += block.count(b"\n")
    item.sha256 = digest.hexdigest()


def _task_size(left: int) -> int:
    """Bytes for the next task of a file with `left` bytes to go: `scan.TASK_BYTES`, and an
    eighth of what is left over the last 8 MB (at least 64 KB).

    A worker's queued tasks cannot be taken back, so the processes finish apart by up to
    two tasks: with a tokenizer a 1 MB task takes a quarter of a second, and the eighths
    keep the last ones at a few milliseconds.
    """
    size = scan.TASK_BYTES  # read here, as in `workers`: one setting for both
    return max(min(size, left // 8), size // 16)


# --- pass 1 -------------------------------------------------------------------------------


def pass_one(
    recipe: Recipe,
    contract: Contract,
    renderer: RowRenderer,
    files: list[tuple[InputSpec, Path]],
    workers: Workers,
    spill: Spill,
    rejects_out: IO[bytes],
    progress: Any,
) -> PassOneState:
    """Pass 1: every input's tasks scanned (`workers`), their results committed in input
    order (dedup, ids, groups, rejects to `rejects_out`, token limits).

    Returns:
        What pass 1 keeps per unique record, for the plan.

    Raises:
        TokenizationError: a row over `--max-seq-length` (unless dropped), or a prompt that
            is not a token prefix of its row; the first in input order.
        ContractError: a template that failed on a record's data.
        InputError: an input that cannot be read, or a JSON array malformed as a whole.
        DatasetError: an input file with no records.
    """
    tags = sorted({spec.tag for spec, _ in files})
    tag_index = {t: i for i, t in enumerate(tags)}
    state = PassOneState(tags=tags)
    max_len = recipe.max_seq_length
    drop_long = recipe.on_overlength == "drop"
    tokenized = renderer.tokenizer is not None
    number = itertools.count().__next__
    order = input_order(files)

    def tasks() -> Iterator[tuple[Task, bytes | None]]:
        for file, (spec, path) in enumerate(order):
            item = InputStats(path=str(path), tag=spec.tag, sha256="")
            state.inputs.append(item)
            yield from file_tasks(file, path, spec.tag, number, item)

    last_file = -1
    for (task, data), out in workers.results(tasks()):
        if task.file != last_file:
            for n in range(last_file, task.file):
                _check_empty(state.inputs, n)  # with any file between that had no task
            last_file = task.file
        item = state.inputs[task.file]
        spec_tag = task.tag
        own_tags = spec_tag == DEFAULT_TAG
        file_tag = tag_index[spec_tag]
        units = array("i", [-1]) * out.count
        spill.units.append(units)
        hits = state.seen.contains_many(out.content)
        limit = out.count if out.contract_error is None else out.contract_error[0]
        rejects, ids, tags_of, token_errors = out.rejects, out.ids, out.tags, out.token_errors
        # Counted here and added once (a failing run's counts are never reported).
        item.records += limit
        state.total += limit
        if not (rejects or ids or tags_of or tokenized or out.contract_error) and FAST_COMMIT:
            # The common task (nothing rejected, no ids, tags or tokens): whole arrays.
            kept = _plain_kept(state.seen.pending, out, hits)
            state.seen.pending.update(as_numpy(out.content)[kept].tolist())
            _keep(state, out, kept, array("H", [file_tag]) * len(kept), units)
            dropped = limit - len(kept)  # every other record was a duplicate
        else:
            kept, kept_tags, dropped = [], array("H"), 0
            hit_list = hits.tolist()
            seen_now = state.seen.pending
            id_hashes = {i: unit_key(0, b"id", x.encode()) for i, x in ids.items()}
            found = state.ids.contains_many(array("Q", id_hashes.values())).tolist()
            id_hits = dict(zip(id_hashes, found, strict=True))
            lines, contents = out.lines, out.content
            for i in range(limit):
                if rejects and i in rejects:
                    item.rejected += 1
                    raw = raw_text(task, out, i, data)
                    _reject(state, rejects_out, task.path, lines[i], rejects[i], raw)
                    continue
                content = contents[i]
                if hit_list[i] or content in seen_now:
                    dropped += 1
                    continue
                explicit = ids.get(i) if ids else None
                if explicit is not None:
                    id_hash = id_hashes[i]
                    if id_hits[i] or state.ids.pending_has(id_hash):
                        item.rejected += 1
                        reason = f"id: {explicit!r} is used by another record"
                        raw = raw_text(task, out, i, data)
                        _reject(state, rejects_out, task.path, lines[i], reason, raw)
                        continue
                    state.ids.add(id_hash)
                if tokenized:
                    tokens, line = out.tokens[i], lines[i]
                    if tokens > max_len:
                        if not drop_long:
                            raise TokenizationError(
                                f"{task.path}:{line}: row has {tokens} tokens, more than "
                                f"--max-seq-length {max_len}; mlx-lm would silently cut its "
                                "answer and EOS (shorten it, raise --max-seq-length, or "
                                "--on-overlength drop)"
                            )
                        state.overlength += 1
                        reason = f"{tokens} tokens > --max-seq-length {max_len}"
                        raw = raw_text(task, out, i, data)
                        _reject(state, rejects_out, task.path, line, reason, raw, tokens=tokens)
                        continue
                    if token_errors and i in token_errors:
                        raise TokenizationError(token_errors[i])
                seen_now.add(content)
                own = tags_of.get(i) if tags_of else None
                if own_tags and own is not None and own != spec_tag:
                    tag = tag_index.get(own, -1)
                    if tag < 0:
                        if len(state.tags) == MAX_TAGS:
                            raise InputError(
                                f"{task.path}:{lines[i]}: tags[0]: {own!r} would be tag "
                                f"{MAX_TAGS + 1:,}; a run takes at most {MAX_TAGS:,} distinct "
                                "tags (a tag names a kind of record, as perfect or default: "
                                "keep per-record labels in another field)"
                            )
                        tag = tag_index[own] = len(state.tags)
                        state.tags.append(own)
                else:
                    tag = file_tag
                kept.append(i)
                kept_tags.append(tag)
            _keep(state, out, kept, kept_tags, units)
        item.accepted += len(kept)
        item.duplicates += dropped
        state.duplicates += dropped
        if out.contract_error is not None:
            raise ContractError(out.contract_error[1])
        if progress is not None:
            progress.update(task.size)
        state.seen.settle()
        state.ids.settle()
        state.groups.settle()
    for n in range(last_file, len(order)):
        _check_empty(state.inputs, n)
    # Tags met in records were numbered as they came: renumber by name, the order every
    # later step (strata, "first tag by name" of a group) relies on. An input tag whose
    # records all carry their own tag is dropped.
    used = set(state.tag_of) if len(state.tags) > len({s.tag for s, _ in files}) else None
    ranked = sorted(
        (i for i in range(len(state.tags)) if used is None or i in used),
        key=lambda i: state.tags[i],
    )
    if ranked != list(range(len(state.tags))):
        new = {old: n for n, old in enumerate(ranked)}
        state.tag_of = array("H", (new[t] for t in state.tag_of))
        state.tags = [state.tags[i] for i in ranked]
    return state


# Distinct tags in a run: a record's tag is 16 bits, and the plan keeps 65,535 for "none".
MAX_TAGS = 65_535
FAST_COMMIT = True  # tests turn it off to compare with the record-by-record commit


def as_numpy(values: array[int]) -> Any:
    """A numpy view of a typed array (the same C type, no copy)."""
    import numpy as np

    return (
        np.frombuffer(values, dtype=values.typecode)
        if len(values)
        else np.zeros(0, values.typecode)
    )


def _plain_kept(pending: set[int], out: Scanned, hits: Any) -> Any:
    """The records of a plain task that are kept, in input order: neither in the dedup set
    (`hits` for its sorted part, `pending` for the rest) nor an earlier record's copy."""
    import numpy as np

    content = as_numpy(out.content)
    fresh = np.flatnonzero(~hits)
    if pending:
        new = [value not in pending for value in content[fresh].tolist()]
        fresh = fresh[np.array(new, dtype=bool)] if new else fresh
    # Within the task, a value's first record is kept (np.unique: the first index of each).
    _, first = np.unique(content[fresh], return_index=True)
    return fresh[np.sort(first)]


def _keep(
    state: PassOneState, out: Scanned, kept: Any, tags: array[int], units: array[int]
) -> None:
    """Make the `kept` records of a task units, in order: their numbers, tags, keys, token
    counts, checks and groups (a group numbered, its key kept, when it is first met)."""
    import numpy as np

    kept = np.asarray(kept, dtype=np.int64)
    start = len(state.tag_of)
    np.put(as_numpy(units), kept, np.arange(start, start + len(kept), dtype=np.int32))
    state.tag_of.extend(tags)
    state.key_of.frombytes(as_numpy(out.key)[kept].tobytes())
    state.tokens_of.frombytes(as_numpy(out.tokens)[kept].tobytes())
    state.checks_of.frombytes(as_numpy(out.mask)[kept].tobytes())
    if out.blocks:
        where = np.flatnonzero(np.isin(kept, as_numpy(out.blocks)))
        state.blocked.frombytes((where + start).astype(np.uint32).tobytes())
    group_of = np.full(len(kept), -1, dtype=np.int32)
    if out.grouped:
        grouped = as_numpy(out.grouped)  # ascending record indices
        at = np.minimum(np.searchsorted(grouped, kept), len(grouped) - 1)
        member = grouped[at] == kept
        idents = np.frombuffer(out.group_idents, dtype="S16")[at[member]]
        group_of[member] = state.groups.ids_for(idents)  # numbered in kept order
    state.group_of.frombytes(group_of.tobytes())


def _check_empty(inputs: list[InputStats], n: int) -> None:
    item = inputs[n] if 0 <= n < len(inputs) else None
    if item is not None and item.records == 0:
        raise DatasetError(f"{item.path}: empty input file (no records); nothing to train on")
