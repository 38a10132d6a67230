"""Pass 1, the hot loop: read every record, validate, dedup, render its row through the
contract, count tokens, run the checks, and spill it to a shuffle bucket (in worker
processes when they pay).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import multiprocessing
import os
from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from jarvis.chat import token_prefix_divergence
from jarvis.checks import run_checks
from jarvis.contract import Contract, load_contract
from jarvis.dataset.recipe import _SHOWN_ERRORS, BUCKETS, Recipe
from jarvis.errors import (
    ContractError,
    DatasetError,
    RecordError,
    TokenizationError,
    UsageError,
)
from jarvis.files import sha256_file
from jarvis.inputs import DEFAULT_TAG, TAG_PATTERN, InputSpec, RawRecord, iter_file
from jarvis.render import SpecialTokenPolicy
from jarvis.schemas import Record, record_key
from jarvis.splits import unit_key

# --- pass 1 --------------------------------------------------------------------------------


@dataclass
class _Input:
    path: str
    tag: str
    sha256: str
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0


@dataclass
class _State:
    """What pass 1 keeps per unique record: a few numbers in compact arrays."""

    tags: list[str]
    tag_of: array[int] = field(default_factory=lambda: array("H"))
    group_of: array[int] = field(default_factory=lambda: array("q"))
    key_of: array[int] = field(default_factory=lambda: array("Q"))
    checks_of: array[int] = field(default_factory=lambda: array("Q"))
    tokens_of: array[int] = field(default_factory=lambda: array("I"))
    seen: set[int] = field(default_factory=set)
    ids: set[int] = field(default_factory=set)
    groups: dict[str, int] = field(default_factory=dict)
    group_keys: list[int] = field(default_factory=list)
    inputs: list[_Input] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)
    reject_count: int = 0
    overlength: int = 0
    duplicates: int = 0
    total: int = 0


class RowRenderer:
    """Renders one validated record as an mlx-lm row (and counts its tokens)."""

    def __init__(self, contract: Contract, recipe: Recipe) -> None:
        self.contract = contract
        self.recipe = recipe
        self.format = recipe.format
        self.tokenizer: Any = None
        self.bos = ""
        self.bos_id: int | None = None
        self.thinking = False
        policy = contract.special_token_policy()
        if recipe.tokenizer is not None:
            from jarvis.chat import has_thinking, load_tokenizer, special_tokens

            self.tokenizer = load_tokenizer(recipe.tokenizer)
            # mlx-lm's enable_thinking default, computed once (it scans the whole vocabulary).
            self.thinking = has_thinking(self.tokenizer)
            policy = contract.special_token_policy(special_tokens(self.tokenizer))
            self.bos_id = getattr(self.tokenizer, "bos_token_id", None)
            # mlx-lm's TextDataset encodes with special tokens: only a tokenizer that adds BOS
            # itself needs the template's BOS string stripped (SmolLM2's bos is <|im_start|>).
            adds_bos = self.bos_id is not None and self.tokenizer.encode("a")[:1] == [self.bos_id]
            self.bos = (getattr(self.tokenizer, "bos_token", None) or "") if adds_bos else ""
        self.policy: SpecialTokenPolicy = policy
        # Batched tokenizing needs the fast (Rust) tokenizer; text rows keep the exact path.
        self.fast: Any = getattr(self.tokenizer, "_tokenizer", None)
        self.batched = self.fast is not None and hasattr(self.fast, "encode_batch")
        self.batched = self.batched and self.format != "text"
        self.verified = False
        if self.format == "text" and self.tokenizer is None:
            raise UsageError("--format text renders through a chat template: pass --tokenizer")
        if self.format == "completions" and contract.system_prompt:
            raise DatasetError(
                f"--format completions cannot keep the system prompt of {contract.ref}: mlx-lm "
                "builds completions rows as [user, assistant], so the model would be trained "
                "without the system prompt it sees at runtime; use --format chat"
            )

    def render(self, model: Record, rid: str) -> tuple[bytes, str, list[dict[str, str]]]:
        """Return (row JSON, target text, messages)."""
        messages = self.contract.messages(model, with_target=True, policy=self.policy)
        target = messages[-1]["content"]
        row: dict[str, Any]
        if self.format == "chat":
            row = {"messages": messages, "id": rid}
        elif self.format == "completions":
            row = {"prompt": messages[1]["content"], "completion": target, "id": rid}
        else:
            row = {"text": self.text(messages), "id": rid}
        return orjson.dumps(row), target, messages

    def text(self, messages: list[dict[str, str]]) -> str:
        """Render text-format content; a leading BOS string is stripped if mlx-lm adds one."""
        from jarvis.chat import apply_chat_template

        text = str(
            apply_chat_template(
                self.tokenizer, messages, add_generation_prompt=False, enable_thinking=self.thinking
            )
        )
        return text[len(self.bos) :] if self.bos and text.startswith(self.bos) else text

    def tokens(self, messages: list[dict[str, str]], row: bytes) -> tuple[list[int], list[int]]:
        """Return (training row tokens as mlx-lm builds them, runtime prompt tokens)."""
        from jarvis.chat import apply_chat_template, mlx_row_tokens

        prompt = apply_chat_template(
            self.tokenizer,
            messages[:-1],
            add_generation_prompt=True,
            tokenize=True,
            enable_thinking=self.thinking,
        )
        full = mlx_row_tokens(self.tokenizer, orjson.loads(row), enable_thinking=self.thinking)
        return full, list(prompt)

    def tokens_many(
        self, items: Sequence[tuple[list[dict[str, str]], bytes]]
    ) -> list[tuple[list[int], list[int]]]:
        """`tokens` for many rows at once: each rendered to text, then all encoded in one
        call of the fast tokenizer (Rust, on every core) instead of two calls per row.

        Exact: the first batch is compared with `tokens` one row at a time; on any
        difference this renderer falls back to `tokens` for good.
        """
        if not self.batched or not items:
            return [self.tokens(m, r) for m, r in items]
        from jarvis.chat import apply_chat_template

        texts: list[str] = []
        for messages, _ in items:
            full = messages
            if self.format == "completions":
                full = [
                    {"role": "user", "content": messages[1]["content"]},
                    {"role": "assistant", "content": messages[-1]["content"]},
                ]
            for chat, generation in ((full, False), (messages[:-1], True)):
                texts.append(
                    str(
                        apply_chat_template(
                            self.tokenizer, chat, add_generation_prompt=generation,
                            enable_thinking=self.thinking,
                        )
                    )
                )  # fmt: skip
        encoded = self.fast.encode_batch(texts, add_special_tokens=False)
        out = [(encoded[i].ids, encoded[i + 1].ids) for i in range(0, len(encoded), 2)]
        if not self.verified:
            self.verified = True
            sample = min(len(items), 32)
            if [self.tokens(m, r) for m, r in items[:sample]] != out[:sample]:
                self.batched = False
                return [self.tokens(m, r) for m, r in items]
        return out

    def show(self, ids: Sequence[int]) -> str:
        """Decode a few tokens for an error message."""
        return repr(self.tokenizer.decode(list(ids)))


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


class _Spill:
    """Bucket files for the deterministic shuffle; each line starts with its sort key."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder
        self.files: list[IO[bytes]] = [
            (folder / f"{i:02d}").open("wb", buffering=1 << 16) for i in range(BUCKETS)
        ]

    def add(self, shuffle: int, unit: int, copy: int, payload: bytes) -> None:
        # 64 - 5 bits: the bucket is the top of the hash, so bucket order is hash order.
        self.files[shuffle >> 59].write(b"%016x%08x%04x\t%s\n" % (shuffle, unit, copy, payload))

    def close(self) -> None:
        _close_all(self.files)

    def buckets(self, *, keep: bool = False) -> Iterator[list[bytes]]:
        """Yield each bucket's lines, sorted by (hash, unit, copy), in hash order."""
        for i in range(BUCKETS):
            path = self.folder / f"{i:02d}"
            lines = path.read_bytes().splitlines()
            if not keep:
                path.unlink()
            lines.sort()
            yield lines


def _reject(state: _State, out: IO[bytes], raw: RawRecord, reason: str, **extra: Any) -> None:
    state.reject_count += 1
    if len(state.rejects) < _SHOWN_ERRORS:
        state.rejects.append(f"{raw.file}:{raw.line}: {reason}")
    entry = {"file": raw.file, "line": raw.line, "reason": reason, **extra, "raw": raw.text}
    if raw.blob is not None:
        # Not UTF-8: `raw` shows it readably (U+FFFD), `raw_base64` keeps it byte for byte.
        entry["raw_base64"] = base64.b64encode(raw.blob).decode("ascii")
    out.write(orjson.dumps(entry) + b"\n")


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Pass 1's work on one record that needs no shared state (so a worker process can do it).

    `error` set means a rejected record; the rest is empty then.
    """

    error: str | None = None
    digest: bytes = b""
    explicit: str | None = None
    rid: str = ""
    row: bytes = b""
    record: bytes = b""
    tokens: int = 0
    token_error: str | None = None
    mask: int = 0
    group: str | None = None
    tag: str | None = None  # the record's own first `tags` entry, if any


class _RecordWork:
    """Validate, render, count tokens and check one raw record (no dedup, no state)."""

    def __init__(self, contract: Contract, renderer: RowRenderer) -> None:
        self.contract = contract
        self.renderer = renderer
        self.has_id = "id" in contract.schema.model_fields
        self.has_tags = "tags" in contract.schema.model_fields
        self.group_field = contract.group_key
        self.checks = contract.spec.checks
        self.retrieved = contract.retrieval.field if contract.retrieval is not None else None

    def chunk(self, raws: Sequence[RawRecord]) -> list[_Outcome]:
        """Each record's outcome, in order; the token checks of the chunk run batched."""
        outs: list[_Outcome] = []
        pending: list[tuple[int, str, list[dict[str, str]], bytes]] = []
        count = self.renderer.tokenizer is not None and self.retrieved is None
        for raw in raws:
            out, messages = self._one(raw)
            if count and out.error is None and messages is not None:
                pending.append((len(outs), f"{raw.file}:{raw.line}", messages, out.row))
            outs.append(out)
        if pending:
            counted = self.renderer.tokens_many([(m, row) for _, _, m, row in pending])
            for (i, where, _, _), (full, prompt) in zip(pending, counted, strict=True):
                problem = _prefix_error(self.renderer, where, prompt, full)
                outs[i] = dataclasses.replace(outs[i], tokens=len(full), token_error=problem)
        return outs

    def _one(self, raw: RawRecord) -> tuple[_Outcome, list[dict[str, str]] | None]:
        """The outcome without its token counts, and the messages to count them from."""
        if raw.error is not None or raw.value is None:
            return _Outcome(error=raw.error or "not a record"), None
        if self.retrieved is not None and raw.value.get(self.retrieved) is not None:
            return _Outcome(
                error=f"{self.retrieved}: {self.contract.ref} retrieves its exemplars itself "
                f"(leave {self.retrieved!r} out, or use a version without retrieval)"
            ), None
        try:
            model = self.contract.validate(raw.value)
            record, digest, rid = record_key(model)
            explicit = getattr(model, "id", None) if self.has_id else None
            row, target, messages = self.renderer.render(model, rid)
        except RecordError as exc:
            return _Outcome(error=str(exc)), None
        except ContractError as exc:
            # The template failed on this record's data: a contract bug, named where it showed.
            raise ContractError(f"{raw.file}:{raw.line}: {exc}") from exc
        # Tokens are counted by `chunk`, batched; with retrieval the row changes once its
        # exemplars are in, so they are counted then.
        mask = 0
        for bit, result in enumerate(run_checks(target, self.checks)):
            if result.passed:
                mask |= 1 << bit
        group = getattr(model, self.group_field, None) if self.group_field else None
        own = getattr(model, "tags", None) if self.has_tags else None
        tag = own[0] if isinstance(own, list) and own and isinstance(own[0], str) else None
        if tag is not None and not TAG_PATTERN.match(tag):
            return _Outcome(error=f"tags[0]: {tag!r} must be letters, digits, _ . -"), None
        if self.has_id:
            record["id"] = rid
        return _Outcome(
            None,
            digest,
            explicit,
            rid,
            row,
            orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
            0,
            None,
            mask,
            None if group is None else str(group),
            tag,
        ), messages


# Worker processes build their own contract and renderer once (Jinja templates and
# tokenizers do not pickle); each task is a chunk of raw records, answered in order.
_WORK: _RecordWork | None = None
_CHUNK = 512


def _exit_with_parent() -> None:
    """Exit this worker as soon as the process that started it dies (even by SIGKILL).

    A pool worker blocks on its task pipe, which every worker holds both ends of: without
    this, a killed parent leaves the workers, the forkserver and the resource tracker alive.
    """
    import signal
    import threading
    from multiprocessing.connection import wait

    # Ctrl-C reaches the whole process group: the parent handles it and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="jarvis-parent-watch", daemon=True).start()


def _init_worker(recipe: Recipe, root: str) -> None:
    global _WORK
    _exit_with_parent()
    contract = load_contract(recipe.contract, root=root)
    _WORK = _RecordWork(contract, RowRenderer(contract, recipe))


def _work_chunk(chunk: list[RawRecord]) -> list[_Outcome]:
    assert _WORK is not None
    return _WORK.chunk(chunk)


def _outcomes(
    raws: Iterator[RawRecord], work: _RecordWork, pool: tuple[Executor, int] | None
) -> Iterator[tuple[RawRecord, _Outcome]]:
    """Yield (raw, outcome) in input order, from this process or a bounded window of tasks."""
    if pool is None:
        while chunk := list(itertools.islice(raws, _CHUNK)):
            yield from zip(chunk, work.chunk(chunk), strict=True)
        return
    executor, jobs = pool
    window: deque[tuple[list[RawRecord], Future[list[_Outcome]]]] = deque()
    limit = 2 * jobs  # bounded memory: a few chunks in flight, never the whole file
    while True:
        chunk = list(itertools.islice(raws, _CHUNK))
        if chunk:
            window.append((chunk, executor.submit(_work_chunk, chunk)))
        if window and (len(window) >= limit or not chunk):
            done, future = window.popleft()
            yield from zip(done, future.result(), strict=True)
        elif not chunk:
            return


def _pass_one(
    recipe: Recipe,
    contract: Contract,
    renderer: RowRenderer,
    files: list[tuple[InputSpec, Path]],
    spill: _Spill,
    rejects_out: IO[bytes],
    progress: Any,
    pool: tuple[Executor, int] | None = None,
) -> _State:
    tags = sorted({spec.tag for spec, _ in files})
    tag_index = {t: i for i, t in enumerate(tags)}
    state = _State(tags=tags)
    seed = recipe.seed
    seed_bytes = b"%d\x00" % seed
    max_len = recipe.max_seq_length
    drop_long = recipe.on_overlength == "drop"
    work = _RecordWork(contract, renderer)
    # A record given under several tags keeps the first tag by name (`default` last), whatever
    # the order of the --input options: duplicates are dropped in this order.
    for spec, path in sorted(files, key=lambda f: (f[0].tag == "default", f[0].tag, str(f[1]))):
        shown = str(path)
        item = _Input(path=shown, tag=spec.tag, sha256=sha256_file(path))
        state.inputs.append(item)
        # Records of an untagged input may carry their own tag (`"tags": ["perfect"]`); an
        # input tagged on the command line tags all of its records.
        own_tags = spec.tag == DEFAULT_TAG
        file_tag = tag_index[spec.tag]
        file_tag_json = orjson.dumps(spec.tag)
        file_copies = recipe.repeat.get(spec.tag, 1)
        # Outcomes are committed strictly in input order, so every decision below (dedup,
        # ids, the first error raised) is the same with or without worker processes.
        size = max(path.stat().st_size, 1)
        shown_bytes = read_bytes = 0
        for raw, out in _outcomes(iter_file(path, shown), work, pool):
            item.records += 1
            state.total += 1
            if progress is not None:
                # The bar counts file bytes; a record's text is about its share of them (more
                # for a gzipped file, hence the clamp), redrawn every 1,000 records.
                read_bytes += len(raw.text) + 1
                if item.records % 1000 == 0:
                    step = min(read_bytes, size) - shown_bytes
                    progress.update(step)
                    shown_bytes += step
            if out.error is not None:
                item.rejected += 1
                _reject(state, rejects_out, raw, out.error)
                continue
            content = int.from_bytes(out.digest[:8], "big")
            if content in state.seen:
                item.duplicates += 1
                state.duplicates += 1
                continue
            if out.explicit is not None:
                id_hash = _h64(out.explicit.encode())
                if id_hash in state.ids:
                    item.rejected += 1
                    reason = f"id: {out.explicit!r} is used by another record"
                    _reject(state, rejects_out, raw, reason)
                    continue
                state.ids.add(id_hash)
            if renderer.tokenizer is not None:
                if out.tokens > max_len:
                    if not drop_long:
                        raise TokenizationError(
                            f"{raw.file}:{raw.line}: row has {out.tokens} tokens, more than "
                            f"--max-seq-length {max_len}; mlx-lm would silently cut its answer "
                            "and EOS (shorten it, raise --max-seq-length, or --on-overlength drop)"
                        )
                    state.overlength += 1
                    reason = f"{out.tokens} tokens > --max-seq-length {max_len}"
                    _reject(state, rejects_out, raw, reason, tokens=out.tokens)
                    continue
                if out.token_error is not None:
                    raise TokenizationError(out.token_error)
            state.seen.add(content)
            item.accepted += 1
            if own_tags and out.tag is not None and out.tag != spec.tag:
                tag = tag_index.get(out.tag, -1)
                if tag < 0:
                    tag = tag_index[out.tag] = len(state.tags)
                    state.tags.append(out.tag)
                tag_json = orjson.dumps(out.tag)
                copies = recipe.repeat.get(out.tag, 1)
            else:
                tag, tag_json, copies = file_tag, file_tag_json, file_copies
            unit = len(state.tag_of)
            state.tag_of.append(tag)
            state.key_of.append(unit_key(seed, b"record", out.digest))
            state.tokens_of.append(out.tokens)
            state.checks_of.append(out.mask)
            if out.group is None:
                state.group_of.append(-1)
            else:
                gid = state.groups.setdefault(out.group, len(state.groups))
                if gid == len(state.group_keys):
                    state.group_keys.append(unit_key(seed, b"group", out.group.encode()))
                state.group_of.append(gid)
            tail = b"%s\t%s\t%s\t%s" % (out.row, orjson.dumps(out.rid), tag_json, out.record)
            spill.add(_h64(seed_bytes + b"shuffle\x00\x00" + out.digest), unit, 0, tail)
            for copy in range(1, copies):
                shuffle = _h64(seed_bytes + b"shuffle\x00%d" % copy + out.digest)
                spill.add(shuffle, unit, copy, out.row)
        if item.records == 0:
            raise DatasetError(f"{shown}: empty input file (no records); nothing to train on")
        if progress is not None:
            progress.update(size - shown_bytes)
    # Tags met in records were numbered as they came: renumber by name, the order every
    # later step (strata, "first tag by name" of a group) relies on. An input tag whose
    # records all carry their own tag is dropped.
    used = set(state.tag_of) if len(state.tags) > len({s.tag for s, _ in files}) else None
    order = sorted(
        (i for i in range(len(state.tags)) if used is None or i in used),
        key=lambda i: state.tags[i],
    )
    if order != list(range(len(state.tags))):
        new = {old: n for n, old in enumerate(order)}
        state.tag_of = array("H", (new[t] for t in state.tag_of))
        state.tags = [state.tags[i] for i in order]
    return state


def _prefix_error(
    renderer: RowRenderer, where: str, prompt: list[int], full: list[int]
) -> str | None:
    """Return why the runtime prompt is not a token prefix of the training row, or None."""
    if len(full) > 1 and renderer.bos_id is not None and full[0] == full[1] == renderer.bos_id:
        return f"{where}: the row starts with a doubled BOS token"
    i = token_prefix_divergence(prompt, full)
    if i is None and len(full) > len(prompt):
        return None
    if i is None:
        return (
            f"{where}: the training row has no tokens after the runtime prompt "
            f"({len(prompt)} prompt tokens, {len(full)} row tokens)"
        )
    lo = max(0, i - 3)
    return (
        f"{where}: the runtime prompt is not a token prefix of the training row; first "
        f"difference at token {i}: prompt has {renderer.show(prompt[lo : i + 3])}, row has "
        f"{renderer.show(full[lo : i + 3])}"
    )


def _close_all(files: Sequence[IO[bytes]]) -> None:
    """Close every file even when one fails (a full disk fails the flush); raise the first."""
    first: OSError | None = None
    for fh in files:
        try:
            fh.close()
        except OSError as exc:
            first = first or exc
    if first is not None:
        raise first
