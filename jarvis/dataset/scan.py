"""Pass 1's hot loop: one task of input records validated, rendered through the contract,
token-counted, checked, hashed and spilled, in a worker process or in the main one.

A task is a byte range of a JSONL file, read and parsed here (the main process only finds
line boundaries), or, for gzipped, `.json` and JSON-array files, records the main process
read. What goes back is compact: a few numbers per record in arrays, and the rare reject or
error by index. The rows themselves go straight to this process's spill files.
"""

from __future__ import annotations

import base64
import functools
import pickle
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from jarvis.checks import verdict
from jarvis.contract import Contract
from jarvis.dataset.recipe import Recipe
from jarvis.dataset.row import RowRenderer, prefix_error
from jarvis.dataset.spill import SEQ_BITS, SpillWriter, block_needle
from jarvis.errors import ContractError, RecordError
from jarvis.inputs import BOM, DEFAULT_TAG, JSON_SPACE, TAG_PATTERN, RawRecord, parse_object
from jarvis.native import plain_dumper
from jarvis.schemas import Record, dump_identity, record_identity
from jarvis.splits import prefixed_digest, prefixed_key, unit_key_prefix

_PLAIN_GROUPS = (str, int, bool, str | None, int | None, bool | None)
# A task's records to count tokens of: (index in the task, messages, row).
Pending = list[tuple[int, list[dict[str, str]], bytes]]
# Records counted in one `tokens_many` call: a whole task's texts, pieces and ids at once
# took 33 MB more peak memory at 1,000,000 records with Qwen2.5 (378 against 345 MB).
_COUNT_BATCH = 2048
# A task's input: big enough to amortize a round trip, small to balance. `records` (cutting
# tasks) and `workers` (whether there is more than one to share) read it here at call time.
TASK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of pass-1 work: a byte range of a file, or records already read."""

    index: int
    file: int  # the input file's place in processing order
    path: str
    tag: str
    start: int = 0
    length: int = 0
    first_line: int = 1
    raws: list[RawRecord] | None = None

    @property
    def size(self) -> int:
        """Input bytes: the range's, or about those of the records read (for gzip, more)."""
        return self.length or sum(len(r.text) + 1 for r in self.raws or ())


@dataclass(slots=True)
class Scanned:
    """One task's results, in input order: arrays by record, the rare cases by index."""

    index: int
    count: int = 0
    content: array[int] = field(default_factory=lambda: array("Q"))  # dedup hash
    key: array[int] = field(default_factory=lambda: array("Q"))  # split ranking key
    tokens: array[int] = field(default_factory=lambda: array("I"))
    mask: array[int] = field(default_factory=lambda: array("Q"))  # checks passed
    lines: array[int] = field(default_factory=lambda: array("I"))
    spans: array[int] = field(default_factory=lambda: array("Q"))  # offset << 32 | length
    grouped: array[int] = field(default_factory=lambda: array("I"))  # records of a group
    # Per grouped record, its group's identity (`dedup.GroupIds`): 16 bytes of the digest
    # whose first 8 are the group's split ranking key (`splits.prefixed_digest`).
    group_idents: bytearray = field(default_factory=bytearray)
    tags: dict[int, str] = field(default_factory=dict)  # a record's own first tag
    ids: dict[int, str] = field(default_factory=dict)  # explicit ids
    rejects: dict[int, str] = field(default_factory=dict)  # the reason
    token_errors: dict[int, str] = field(default_factory=dict)
    blocks: array[int] = field(default_factory=lambda: array("I"))  # a non-empty RAG block
    # A template that failed on a record's data: (index, message); the task stops there.
    contract_error: tuple[int, str] | None = None
    # Records whose tokens are still to count (`Scanner.scan_rows`; empty once counted).
    pending: Pending = field(default_factory=list)

    def park(self, path: Path) -> ParkedScan:
        """Write these results to `path` for the main process.

        A task's results are about 150 KB: through the pool's pipe (64 KB) a worker waits
        for the main process's result thread, which waits for the GIL, to take each piece
        (a tenth of the worker's time, traced); a file in the page cache takes them at once.
        """
        path.write_bytes(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))
        return ParkedScan(path)


@dataclass(frozen=True, slots=True)
class ParkedScan:
    """A task's results that a worker wrote to a file."""

    path: Path

    def load(self) -> Scanned:
        """The results, read back (and the file removed)."""
        scanned: Scanned = pickle.loads(self.path.read_bytes())
        self.path.unlink()
        return scanned


class Scanner:
    """Runs tasks for one process: its own contract, renderer and spill files."""

    def __init__(
        self, contract: Contract, renderer: RowRenderer, recipe: Recipe, spill: SpillWriter | None
    ) -> None:
        self.contract = contract
        self.renderer = renderer
        self.spill = spill  # a worker's is set with its first task
        self.has_id = "id" in contract.schema.model_fields
        self.has_tags = "tags" in contract.schema.model_fields
        self.group_field = contract.group_key
        # (bit, pass or fail) with its arguments bound once.
        named = [(name, args or {}) for spec in contract.spec.checks for name, args in spec.items()]
        self.checks = [(1 << bit, verdict(name, args)) for bit, (name, args) in enumerate(named)]
        self.retrieved = contract.retrieval.field if contract.retrieval is not None else None
        # Records whose RAG block is not empty, counted here rather than searched for in pass 2
        # (retrieval fills the block after pass 1, and counts it then).
        self.block = block_needle(contract.rag_field) if self.retrieved is None else None
        # From the recipe: a renderer made before the tokenizer loads (`early`) has none.
        self.count_tokens = recipe.tokenizer is not None and self.retrieved is None
        self.record_prefix = unit_key_prefix(recipe.seed, b"record")
        self.group_prefix = unit_key_prefix(recipe.seed, b"group")
        # A task's groups' digests: a thread's records most often come together.
        self.idents: dict[str, bytes] = {}
        # The shuffle key of copy c is keyed by b"<c>" + digest; the original's by b"\0".
        self.shuffle_prefix = unit_key_prefix(recipe.seed, b"shuffle")
        self.repeat = recipe.repeat
        self.tag_json: dict[str, bytes] = {}
        # Validation and dump in one plain function where the schema allows (`native`); a
        # group field of a nested model would print differently from its dump: not then.
        group = contract.schema.model_fields.get(self.group_field or "")
        plain_group = group is None or group.annotation in _PLAIN_GROUPS
        self.plain = plain_dumper(contract.schema) if plain_group else None

    def scan(self, task: Task, data: bytes | None = None) -> Scanned:
        """Run one task (`data`: the range's bytes when the caller has them)."""
        return self.count(task, self.scan_rows(task, data))

    def scan_rows(self, task: Task, data: bytes | None = None) -> Scanned:
        """Every step of `scan` but the token count, which needs no tokenizer here: the
        results have token counts 0, and `pending` the records `count` counts."""
        out = Scanned(task.index)
        self.idents.clear()
        pending = out.pending
        seq0 = task.index << SEQ_BITS
        own_tags = task.tag == DEFAULT_TAG
        lines, spans, record, count_tokens = out.lines, out.spans, self._record, self.count_tokens
        for i, (line, span, value, raw) in enumerate(self._records(task, data)):
            lines.append(line)
            spans.append(span)
            if raw is not None:  # not a JSON object: the reader's reason
                self._reject(out, i, raw.error or "not a record")
                continue
            try:
                done = record(out, i, seq0 + i, value, task, own_tags)
            except ContractError as exc:
                out.contract_error = (i, f"{task.path}:{line}: {exc}")
                break
            if done is not None and count_tokens:
                pending.append((i, *done))
        out.count = len(lines)
        out.tokens = array("I", [0]) * out.count  # counted by `count` when a tokenizer is given
        assert self.spill is not None
        self.spill.flush()
        return out

    def count(self, task: Task, out: Scanned) -> Scanned:
        """Count the tokens of a task's `pending` records (`scan_rows`) into `out`, with
        the records whose runtime prompt is not a token prefix of their row; returns `out`."""
        pending, out.pending = out.pending, []
        if not pending:
            return out
        for at in range(0, len(pending), _COUNT_BATCH):
            part = pending[at : at + _COUNT_BATCH]
            counted = self.renderer.tokens_many([(m, row) for _, m, row in part])
            for (i, _, _), (full, prompt) in zip(part, counted, strict=True):
                out.tokens[i] = len(full)
                where = f"{task.path}:{out.lines[i]}"
                problem = prefix_error(self.renderer, where, prompt, full)
                if problem is not None:
                    out.token_errors[i] = problem
        return out

    def _records(
        self, task: Task, data: bytes | None
    ) -> Iterator[tuple[int, int, Any, RawRecord | None]]:
        """(line, span, parsed object, None) per record, or (line, span, None, raw) with the
        reader's reason for one that is not a JSON object (span: 0 for records read here)."""
        if task.raws is not None:
            for raw in task.raws:
                if raw.error is not None or raw.value is None:
                    yield raw.line, 0, None, raw
                else:
                    yield raw.line, 0, raw.value, None
            return
        if data is None:
            with open(task.path, "rb") as fh:
                fh.seek(task.start)
                data = fh.read(task.length)
        line = task.first_line - 1
        offset = 0
        loads = orjson.loads
        crlf = b"\r" in data  # (one scan of the range, not a call per line)
        for piece in data.split(b"\n"):
            line += 1
            start, offset = offset, offset + len(piece) + 1
            if line == 1 and piece.startswith(BOM):
                piece, start = piece[3:], start + 3
            if crlf and piece.endswith(b"\r"):
                piece = piece[:-1]
            if piece[:1] != b"{" and not piece.strip(JSON_SPACE):  # (no copy for a record's line)
                continue
            try:
                value = loads(piece)
            except orjson.JSONDecodeError:
                value = None
            span = start << 32 | len(piece)
            if type(value) is dict:
                yield line, span, value, None
            else:  # the exact reason, as the reader words it
                yield line, span, None, parse_object(task.path, line, piece)

    def _reject(self, out: Scanned, i: int, reason: str) -> None:
        # Only the reason travels: the verbatim text is re-read from the span (or the raws).
        out.rejects[i] = reason
        out.content.append(0)
        out.key.append(0)
        out.mask.append(0)

    def _record(
        self, out: Scanned, i: int, seq: int, value: dict[str, Any], task: Task, own_tags: bool
    ) -> tuple[list[dict[str, str]], bytes] | None:
        """Validate, render, check and spill one record; return (messages, row) to count
        tokens from, or None when it was rejected."""
        contract = self.contract
        if self.retrieved is not None and value.get(self.retrieved) is not None:
            reason = (
                f"{self.retrieved}: {contract.ref} retrieves its exemplars itself "
                f"(leave {self.retrieved!r} out, or use a version without retrieval)"
            )
            self._reject(out, i, reason)
            return None
        try:
            record = None if self.plain is None else self.plain(value)
            model: Record | None = None
            if record is None:  # pydantic's result, or its error
                model = contract.validate(value)
                record, digest, rid, text = record_identity(model)
            else:
                record, digest, rid, text = dump_identity(contract.schema, record)
            row, target, messages = self.renderer.render(model, rid, record)
        except RecordError as exc:
            self._reject(out, i, str(exc))
            return None
        # The dump holds the same plain values as the model (nulls: absent, so None).
        get = record.get if model is None else functools.partial(getattr, model)
        own = get("tags", None) if self.has_tags else None
        tag = own[0] if isinstance(own, list) and own and isinstance(own[0], str) else None
        if tag is not None and not TAG_PATTERN.match(tag):
            self._reject(out, i, f"tags[0]: {tag!r} must be letters, digits, _ . -")
            return None
        mask = 0
        for bit, passes in self.checks:
            if passes(target):
                mask |= bit
        # records.jsonl's record carries its id: `text` (the digest's JSON) has it already
        # when it is the record's own, else it goes first when every key sorts after it.
        rid_json = b'"%s"' % rid.encode()  # the digest's hex, unless explicit
        if self.has_id:
            explicit = get("id", None)
            if explicit is not None:
                out.ids[i] = explicit
            if explicit is not None and record.get("id") == rid:
                rid_json = orjson.dumps(rid)
            elif "id" not in record and record and min(record) > "id":
                text = b'{"id":%s,%s' % (rid_json, text[1:])
            else:
                record["id"] = rid
                text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
                rid_json = orjson.dumps(rid)
        group = get(self.group_field, None) if self.group_field else None
        if group is not None:
            name = str(group)
            ident = self.idents.get(name)
            if ident is None:
                ident = self.idents[name] = prefixed_digest(self.group_prefix, name.encode(), 16)
            out.grouped.append(i)
            out.group_idents += ident
        if tag is not None:
            out.tags[i] = tag
        if self.block is not None and self.block in text:
            out.blocks.append(i)
        out.content.append(int.from_bytes(digest[:8], "big"))
        out.key.append(prefixed_key(self.record_prefix, digest))
        out.mask.append(mask)
        # Records of an untagged input may carry their own tag; a tagged input tags them all.
        name = tag if own_tags and tag is not None and tag != task.tag else task.tag
        tag_json = self.tag_json.get(name)
        if tag_json is None:
            tag_json = self.tag_json[name] = orjson.dumps(name)
        spill = self.spill
        assert spill is not None
        spill.add_record(
            prefixed_digest(self.shuffle_prefix, b"\x00" + digest),
            seq,
            row,
            rid_json,
            tag_json,
            text,
        )
        if self.repeat:
            for copy in range(1, self.repeat.get(name, 1)):
                key = prefixed_digest(self.shuffle_prefix, b"%d" % copy + digest)
                spill.add(key, seq, copy, row)
        return messages, row


def raw_text(task: Task, out: Scanned, i: int, data: bytes | None = None) -> tuple[str, str | None]:
    """A record's verbatim text, and base64 of its bytes when they are not UTF-8 (the text
    then shows them readably, with U+FFFD), for rejects.jsonl.

    Args:
        data: the task's bytes when the caller still has them (else they are re-read).
    """
    if task.raws is not None:
        raw = task.raws[i]
        return raw.text, None if raw.blob is None else base64.b64encode(raw.blob).decode("ascii")
    at, length = out.spans[i] >> 32, out.spans[i] & 0xFFFFFFFF
    if data is not None:
        piece = data[at : at + length]
    else:
        with open(task.path, "rb") as fh:
            fh.seek(task.start + at)
            piece = fh.read(length)
    try:
        return piece.decode("utf-8"), None
    except UnicodeDecodeError:
        return piece.decode("utf-8", "replace"), base64.b64encode(piece).decode("ascii")
