"""`render-dataset`: verified, composition-aware mlx-lm training data from one contract.

Two streaming passes keep memory bounded:

1. Read every input record, validate it, render its row through the contract's one render
   path, run the output checks (and the token checks with a tokenizer), and spill the row to
   one of `BUCKETS` temp files chosen by its shuffle hash. Per record only a few numbers stay
   in memory (compact arrays).
2. Assign splits (`jarvis.splits`), then read the buckets in hash order, sort each, and append
   its rows to `train.jsonl`, `valid.jsonl` and `test.jsonl`. So every file comes out in a
   deterministic shuffled order that does not depend on input order.

Everything is written into a temp folder beside the output and renamed into place at the end.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import math
import multiprocessing
import os
import shutil
import sys
from array import array
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from jarvis.chat import token_prefix_divergence
from jarvis.checks import run_checks
from jarvis.contract import Contract, load_contract
from jarvis.errors import (
    ContractError,
    DatasetError,
    InputError,
    JarvisError,
    RecordError,
    TokenizationError,
    UsageError,
)
from jarvis.files import load_yaml, read_jsonl, sha256_file
from jarvis.inputs import DEFAULT_TAG, TAG_PATTERN, InputSpec, RawRecord, expand, iter_file
from jarvis.outdir import atomic_dir
from jarvis.render import SpecialTokenPolicy
from jarvis.schemas import Record
from jarvis.splits import SPLITS, TRAIN, assign, parse_split, unit_key

MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
REJECTS = "rejects.jsonl"
BUCKETS = 32  # shuffle buckets: one holds ~1/32 of the rendered rows in memory at a time
_SHOWN_ERRORS = 5
Format = Literal["chat", "completions", "text"]


class Recipe(BaseModel):
    """Every setting of one `render-dataset` run; the manifest stores it to rebuild exactly."""

    model_config = ConfigDict(extra="forbid")

    contract: str
    inputs: list[str] = Field(min_length=1)
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    format: Format = "chat"
    train_only: list[str] = Field(default_factory=list)
    repeat: dict[str, int] = Field(default_factory=dict)
    min_ratio: dict[str, float] = Field(default_factory=dict)
    min_compliant: float | None = Field(default=None, ge=0.0, le=1.0)
    tokenizer: str | None = None
    max_seq_length: int = Field(default=2048, gt=0)
    on_overlength: Literal["fail", "drop"] = "fail"
    max_reject_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Each written split needs at least this many rows: mlx-lm cannot form a batch from fewer
    # (set it to the training --batch-size). `batch_size` is the old name, still accepted.
    min_split_rows: int = Field(
        default=4, gt=0, validation_alias=AliasChoices("min_split_rows", "batch_size")
    )
    # The contract root; None: `render_dataset(root=...)`, else $JARVIS_ROOT or the bundled
    # root. The manifest stores the root used, so the stored recipe rebuilds from anywhere.
    root: str | None = None

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, value: Any) -> tuple[float, float, float]:
        try:
            return parse_split(value)
        except InputError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                InputSpec.parse(text)
            except InputError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("repeat")
    @classmethod
    def _repeat(cls, value: dict[str, int]) -> dict[str, int]:
        for tag, n in value.items():
            if n < 1:
                raise ValueError(f"--repeat {tag}={n}: N must be at least 1")
        return value

    @field_validator("min_ratio")
    @classmethod
    def _min_ratio(cls, value: dict[str, float]) -> dict[str, float]:
        for tag, r in value.items():
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"--min-ratio {tag}={r}: R must be between 0 and 1")
        return value

    @classmethod
    def build(cls, **values: Any) -> Recipe:
        """Validate settings, turning pydantic errors into `InputError`.

        Raises:
            InputError: a setting is invalid (names it).
        """
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise UsageError(f"recipe: {loc}: {msg}" if loc else f"recipe: {msg}") from exc

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> Recipe:
        """Read a recipe YAML; relative input and tokenizer paths are relative to its folder.

        Args:
            path: the YAML file (a mapping of the same keys as the CLI options).
            overrides: settings that replace the file's (CLI options given explicitly).

        Raises:
            InputError: unreadable YAML or an invalid setting.
        """
        file = Path(path)
        try:
            data = load_yaml(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UsageError(f"{file}: cannot read the recipe: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError(f"{file}: a recipe is a YAML mapping of settings")
        base = file.parent
        if isinstance(data.get("inputs"), list):
            data["inputs"] = [_rebase(str(s), base) for s in data["inputs"]]
        if isinstance(data.get("tokenizer"), str):
            data["tokenizer"] = _rebase_path(data["tokenizer"], base)
        data.update(overrides)
        return cls.build(**data)

    def input_specs(self) -> list[InputSpec]:
        """Return the parsed `--input` values."""
        return [InputSpec.parse(s) for s in self.inputs]


def _rebase_path(path: str, base: Path) -> str:
    return path if Path(path).is_absolute() else os.path.normpath(base / path)


def _rebase(text: str, base: Path) -> str:
    spec = InputSpec.parse(text)
    return str(InputSpec(_rebase_path(spec.path, base), spec.tag))


def parse_assignments(
    values: Sequence[str], option: str, convert: type[int] | type[float]
) -> dict[str, Any]:
    """Parse repeated `TAG=VALUE` options (`--repeat perfect=5`).

    Raises:
        InputError: a value is not `TAG=NUMBER`.
    """
    out: dict[str, Any] = {}
    for text in values:
        tag, sep, raw = text.partition("=")
        try:
            if not sep or not tag:
                raise ValueError
            out[tag] = convert(raw)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            raise UsageError(f"{option} {text!r}: expected TAG=N with N {kind}") from None
    return out


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

    def show(self, ids: Sequence[int]) -> str:
        """Decode a few tokens for an error message."""
        return repr(self.tokenizer.decode(list(ids)))


def _canonical(record: Mapping[str, Any]) -> bytes:
    """The content key's bytes: sorted-key JSON without nulls (an explicit null = absent)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


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

    def __call__(self, raw: RawRecord) -> _Outcome:
        if raw.error is not None or raw.value is None:
            return _Outcome(error=raw.error or "not a record")
        if self.retrieved is not None and raw.value.get(self.retrieved) is not None:
            return _Outcome(
                error=f"{self.retrieved}: {self.contract.ref} retrieves its exemplars itself "
                f"(leave {self.retrieved!r} out, or use a version without retrieval)"
            )
        try:
            model = self.contract.validate(raw.value)
            record = model.model_dump(mode="json", exclude_none=True)
            digest = hashlib.sha256(_canonical(record)).digest()
            explicit = getattr(model, "id", None) if self.has_id else None
            rid = explicit if isinstance(explicit, str) else digest.hex()[:16]
            row, target, messages = self.renderer.render(model, rid)
        except RecordError as exc:
            return _Outcome(error=str(exc))
        except ContractError as exc:
            # The template failed on this record's data: a contract bug, named where it showed.
            raise ContractError(f"{raw.file}:{raw.line}: {exc}") from exc
        tokens, token_error = 0, None
        # With retrieval the row changes once its exemplars are in: tokens are counted then.
        if self.renderer.tokenizer is not None and self.retrieved is None:
            full, prompt = self.renderer.tokens(messages, row)
            tokens = len(full)
            token_error = _prefix_error(self.renderer, f"{raw.file}:{raw.line}", prompt, full)
        mask = 0
        for bit, result in enumerate(run_checks(target, self.checks)):
            if result.passed:
                mask |= 1 << bit
        group = getattr(model, self.group_field, None) if self.group_field else None
        own = getattr(model, "tags", None) if self.has_tags else None
        tag = own[0] if isinstance(own, list) and own and isinstance(own[0], str) else None
        if tag is not None and not TAG_PATTERN.match(tag):
            return _Outcome(error=f"tags[0]: {tag!r} must be letters, digits, _ . -")
        if self.has_id:
            record["id"] = rid
        return _Outcome(
            None,
            digest,
            explicit,
            rid,
            row,
            orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
            tokens,
            token_error,
            mask,
            None if group is None else str(group),
            tag,
        )


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
    return [_WORK(raw) for raw in chunk]


def _outcomes(
    raws: Iterator[RawRecord], work: _RecordWork, pool: tuple[Executor, int] | None
) -> Iterator[tuple[RawRecord, _Outcome]]:
    """Yield (raw, outcome) in input order, from this process or a bounded window of tasks."""
    if pool is None:
        for raw in raws:
            yield raw, work(raw)
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


# --- between the passes: splits and composition ---------------------------------------------


@dataclass
class _Plan:
    split_of: bytearray
    rows: list[list[int]]  # [split][tag] -> rows (train counts repeats)
    records: list[list[int]]  # [split][tag] -> unique records
    passed: list[list[int]]  # [split][tag] -> rows passing every check
    per_check: list[list[int]]  # [split][check] -> rows passing that check
    tokens: list[list[int]]  # [split] -> token count per record (repeats not counted)


def _plan(recipe: Recipe, contract: Contract, state: _State) -> _Plan:
    n = len(state.tag_of)
    ntags = len(state.tags)
    forced_tags = {state.tags.index(t) for t in recipe.train_only}
    # Units: groups first (index = group id), then ungrouped records.
    ngroups = len(state.group_keys)
    unit_of = array("q", [0]) * n
    keys = array("Q", state.group_keys)
    strata = array("H", [65535]) * ngroups
    sizes = array("I", [0]) * ngroups
    forced = bytearray(ngroups)
    for r in range(n):
        g = state.group_of[r]
        tag = state.tag_of[r]
        if g >= 0:
            unit_of[r] = g
            sizes[g] += 1
            # A group spanning tags is stratified under its first tag name; forced if any is.
            strata[g] = min(strata[g], tag)
            if tag in forced_tags:
                forced[g] = 1
        else:
            unit_of[r] = len(keys)
            keys.append(state.key_of[r])
            strata.append(tag)
            sizes.append(1)
            forced.append(1 if tag in forced_tags else 0)
    unit_split = assign(keys, strata, sizes, forced, recipe.split)
    split_of = bytearray(unit_split[unit_of[r]] for r in range(n))
    nchecks = len(contract.spec.checks)
    all_checks = (1 << nchecks) - 1
    repeat = [recipe.repeat.get(t, 1) for t in state.tags]
    plan = _Plan(
        split_of=split_of,
        rows=[[0] * ntags for _ in SPLITS],
        records=[[0] * ntags for _ in SPLITS],
        passed=[[0] * ntags for _ in SPLITS],
        per_check=[[0] * nchecks for _ in SPLITS],
        tokens=[[] for _ in SPLITS],
    )
    for r in range(n):
        s = split_of[r]
        tag = state.tag_of[r]
        weight = repeat[tag] if s == TRAIN else 1
        plan.rows[s][tag] += weight
        plan.records[s][tag] += 1
        mask = state.checks_of[r]
        if mask == all_checks:
            plan.passed[s][tag] += weight
        for bit in range(nchecks):
            if mask >> bit & 1:
                plan.per_check[s][bit] += weight
        plan.tokens[s].append(state.tokens_of[r])
    return plan


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def _token_stats(lengths: list[int]) -> dict[str, float | int]:
    ordered = sorted(lengths)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
        "p95": p95,
    }


def _split_summary(
    recipe: Recipe, contract: Contract, state: _State, plan: _Plan, s: int, tokens: bool
) -> dict[str, Any]:
    rows = sum(plan.rows[s])
    names = [_check_name(c) for c in contract.spec.checks]
    out: dict[str, Any] = {
        "rows": rows,
        "records": sum(plan.records[s]),
        "tags": {
            t: {
                "rows": plan.rows[s][i],
                "records": plan.records[s][i],
                "share": _share(plan.rows[s][i], rows),
            }
            for i, t in enumerate(state.tags)
        },
        "repeats": {t: n for t, n in sorted(recipe.repeat.items())} if s == TRAIN else {},
        "compliance": {
            "overall": _share(sum(plan.passed[s]), rows),
            "per_tag": {
                t: _share(plan.passed[s][i], plan.rows[s][i]) for i, t in enumerate(state.tags)
            },
            "per_check": {name: _share(plan.per_check[s][b], rows) for b, name in enumerate(names)},
        },
    }
    if tokens and plan.tokens[s]:
        out["tokens"] = _token_stats(plan.tokens[s])
    return out


def _check_name(spec: Mapping[str, Any]) -> str:
    return next(iter(spec))


def _check_composition(recipe: Recipe, contract: Contract, state: _State, plan: _Plan) -> None:
    if not state.tag_of:
        raise DatasetError(
            f"no valid records: all {state.total} records were rejected; nothing to train on"
        )
    bs = recipe.min_split_rows
    for s, name in enumerate(SPLITS):
        rows = sum(plan.rows[s])
        if s != TRAIN and recipe.split[s] == 0:
            continue
        if rows < bs:
            hint = (
                "add records"
                if s == TRAIN
                else f"add records, or raise its --split share (0 leaves {name}.jsonl out)"
            )
            raise DatasetError(
                f"{name} split has {rows} rows, fewer than --min-split-rows {bs}: mlx-lm "
                f"cannot form one batch from it; {hint}"
            )
    train_rows = sum(plan.rows[TRAIN])
    for tag, ratio in sorted(recipe.min_ratio.items()):
        i = state.tags.index(tag)
        have = plan.rows[TRAIN][i]
        share = have / train_rows
        if share < ratio:
            others = train_rows - have
            records = plan.records[TRAIN][i]
            if ratio >= 1 or not records:
                # No --repeat can help: other tags keep rows, or the tag has none to repeat.
                hint = (
                    f"add {tag} records"
                    if not records
                    else f"no --repeat reaches a share of {ratio:g} while other tags have "
                    f"{others} train rows"
                )
            else:
                need = math.ceil(ratio * others / ((1 - ratio) * records))
                hint = f"add {tag} records, or try --repeat {tag}={need}"
            raise DatasetError(
                f"tag {tag!r} is {share:.2%} of train ({have} of {train_rows} rows), below "
                f"--min-ratio {tag}={ratio:g}; {hint}"
            )
    if recipe.min_compliant is not None:
        passed = sum(plan.passed[TRAIN])
        share = passed / train_rows
        if share < recipe.min_compliant:
            per_check = ", ".join(
                f"{_check_name(c)} {plan.per_check[TRAIN][b] / train_rows:.1%}"
                for b, c in enumerate(contract.spec.checks)
            )
            raise DatasetError(
                f"{share:.2%} of training targets pass every output check of {contract.ref} "
                f"({passed} of {train_rows} rows), below --min-compliant "
                f"{recipe.min_compliant:g}; per check: {per_check or 'no checks'}"
            )


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


def _pass_two(
    tmp: Path, spill: _Spill, plan: _Plan, rag: _RagRows | None
) -> dict[str, dict[str, Any]]:
    writers = [
        _Writer(tmp / f"{name}.jsonl") if sum(plan.rows[s]) else None
        for s, name in enumerate(SPLITS)
    ]
    records = _Writer(tmp / RECORDS)
    try:
        return _write_splits(spill, plan, writers, records, rag)
    except BaseException:
        with contextlib.suppress(OSError):
            _close_all([w.fh for w in [*writers, records] if w is not None])
        raise


def _write_splits(
    spill: _Spill,
    plan: _Plan,
    writers: list[_Writer | None],
    records: _Writer,
    rag: _RagRows | None,
) -> dict[str, dict[str, Any]]:
    split_json = [b'"%s"' % name.encode() for name in SPLITS]
    split_of = plan.split_of
    for lines in spill.buckets():
        for line in lines:
            unit = int(line[16:24], 16)
            s = split_of[unit]
            copy = line[24:28] != b"0000"
            if copy and s != TRAIN:
                continue
            payload = line[29:]
            if copy:
                row = payload if rag is None else rag.get(unit)[0]
            else:
                row, rid, tag, record = payload.split(b"\t")
                if rag is not None:
                    row, record = rag.get(unit)
                records.write(
                    b'{"id":%s,"split":%s,"tag":%s,"record":%s}\n'
                    % (rid, split_json[s], tag, record)
                )
            writer = writers[s]
            assert writer is not None
            writer.write(row + b"\n")
    files = {f"{name}.jsonl": w.close() for name, w in zip(SPLITS, writers, strict=True) if w}
    files[RECORDS] = records.close()
    return files


# --- between the passes: retrieval (a contract with a `retrieval:` block) -------------------

EXEMPLARS = "exemplars.sqlite"


class _RagRows:
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


def _retrieve_rows(
    tmp: Path,
    recipe: Recipe,
    contract: Contract,
    renderer: RowRenderer,
    spill: _Spill,
    state: _State,
    plan: _Plan,
) -> tuple[_RagRows, dict[str, Any]]:
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
    for lines in spill.buckets(keep=True):
        for line in lines:
            if line[24:28] == b"0000":
                _, rid, _, record = line[29:].split(b"\t")
                units.append((int(line[16:24], 16), orjson.loads(rid), record))
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
    rows = _RagRows(spill.folder / "rag", len(state.tag_of))
    with_exemplars = [0] * len(SPLITS)
    shown = [0] * len(SPLITS)
    max_len = recipe.max_seq_length
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
            if renderer.tokenizer is not None:
                full, prompt = renderer.tokens(messages, row)
                if len(full) > max_len:
                    raise TokenizationError(
                        f"record {rid!r}: with its {len(found)} exemplars the row has "
                        f"{len(full)} tokens, more than --max-seq-length {max_len} (raise it, "
                        f"or lower the contract's retrieval.k)"
                    )
                problem = _prefix_error(renderer, f"record {rid!r}", prompt, full)
                if problem is not None:
                    raise TokenizationError(problem)
                state.tokens_of[unit] = len(full)
            rows.put(unit, row, orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    plan.tokens = [[] for _ in SPLITS]
    for r in range(len(state.tag_of)):
        plan.tokens[plan.split_of[r]].append(state.tokens_of[r])
    splits = {}
    for s, name in enumerate(SPLITS):
        records = sum(plan.records[s])
        if records:
            splits[name] = {
                "rows_with_exemplars": _share(with_exemplars[s], records),
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


def _rag_shares(tmp: Path, contract: Contract) -> dict[str, float] | None:
    """Caller-provided RAG blocks: the share of each split's records that carry one."""
    field = contract.rag_field
    if field is None:
        return None
    # Sorted-key JSON: `"retrieved":[{` only appears for a non-empty list (a string value
    # would hold `\"`, never a bare quote).
    needle = b'"%s":[{' % field.encode()
    counts = [0] * len(SPLITS)
    totals = [0] * len(SPLITS)
    index = {name.encode(): s for s, name in enumerate(SPLITS)}
    with (tmp / RECORDS).open("rb") as fh:
        for line in fh:
            split = line[line.index(b'"split":"') + 9 :].split(b'"', 1)[0]
            s = index[split]
            totals[s] += 1
            counts[s] += needle in line
    return {name: _share(counts[s], totals[s]) for s, name in enumerate(SPLITS) if totals[s]}


# --- the command ---------------------------------------------------------------------------


def _check_option_tags(recipe: Recipe, tags: set[str]) -> None:
    """Every tag an option names has records (an input's tag, or a record's own)."""
    for option, names in (
        ("--train-only", recipe.train_only),
        ("--repeat", list(recipe.repeat)),
        ("--min-ratio", list(recipe.min_ratio)),
    ):
        for tag in names:
            if tag not in tags:
                raise UsageError(
                    f"{option} {tag}: no input has the tag {tag!r} "
                    f"(tags: {', '.join(sorted(tags))}); tag an input as --input {tag}=PATH "
                    f'or its records as "tags": ["{tag}"]'
                )


def _collect_files(recipe: Recipe, contract: Contract) -> list[tuple[InputSpec, Path]]:
    specs = recipe.input_specs()
    if "tags" not in contract.schema.model_fields:
        _check_option_tags(recipe, {s.tag for s in specs})  # known now: refuse before reading
    files: list[tuple[InputSpec, Path]] = []
    for spec in specs:
        files += [(spec, p) for p in expand(spec)]
    return files


_PARALLEL_BYTES = 4 << 20
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _jobs(jobs: int | None, files: list[tuple[InputSpec, Path]]) -> int:
    """The number of worker processes: as asked, or by input size and CPU count."""
    if jobs is not None:
        return max(1, jobs)
    # Starting spawned workers costs about a second: only worth it for larger inputs.
    size = sum(path.stat().st_size for _, path in files)
    return min(os.cpu_count() or 1, 8) if size >= _PARALLEL_BYTES else 1


def render_dataset(
    recipe: Recipe,
    out: Path,
    *,
    force: bool = False,
    root: str | Path | None = None,
    progress: bool = False,
    jobs: int | Literal["auto"] = 1,
) -> dict[str, Any]:
    """Render, check and write an mlx-lm dataset folder from raw records.

    Args:
        recipe: every setting (CLI options or `--recipe` file).
        out: the output folder (`train.jsonl`, `valid.jsonl`, `test.jsonl`, `records.jsonl`,
            `rejects.jsonl` when any, `manifest.json`).
        force: replace an existing `out`.
        root: contract root (default `$JARVIS_ROOT`, else the bundled root).
        progress: show a progress bar on stderr when it is a terminal.
        jobs: worker processes for validating, rendering and tokenizing; default 1 (none,
            so a plain script needs no `if __name__ == "__main__":` guard); "auto" (the CLI's
            default): one per CPU (at most 8) for inputs of 4 MB or more. Workers need the
            guard in a calling script. The output is byte-identical whatever the number.

    Returns:
        The manifest written to `out/manifest.json`.

    Raises:
        OutputExistsError: `out` exists and `force` is false.
        InputError: a missing input, or more rejected records than `--max-reject-rate`.
        DatasetError: nothing to train on, a split below `--min-split-rows`, or a composition
            threshold (`--min-ratio`, `--min-compliant`) not met.
        TokenizationError: a row over `--max-seq-length`, or a prompt that is not a token
            prefix of its row.
    """
    contract = load_contract(recipe.contract, root=root if root is not None else recipe.root)
    files = _collect_files(recipe, contract)
    renderer = RowRenderer(contract, recipe)
    data = [s.path for s in recipe.input_specs()]
    reads: list[str | os.PathLike[str]] = [
        contract.root,
        *([recipe.tokenizer] if recipe.tokenizer is not None else []),
    ]
    with atomic_dir(Path(out), kind="dataset", force=force, inputs=reads, data=data) as tmp:
        spill = _Spill(tmp / ".spill")
        bar = _progress_bar(files) if progress and sys.stderr.isatty() else None
        workers = _jobs(None if jobs == "auto" else jobs, files)
        executor = None
        if workers > 1:
            executor = ProcessPoolExecutor(
                max_workers=workers,
                # Never plain fork: forking a process whose threads (tokenizers, mlx) hold locks
                # can deadlock. A calling script needs the `if __name__ == "__main__":` guard.
                mp_context=multiprocessing.get_context(_START_METHOD),
                initializer=_init_worker,
                initargs=(recipe, str(contract.root)),
            )
        try:
            manifest = _render_into(
                tmp, recipe, contract, renderer, files, spill, bar, executor, workers
            )
        except JarvisError as exc:
            # The run fails, so `out` keeps its previous content, but the rejects that made
            # it fail must stay readable: they move beside `out`.
            kept = _keep_rejects(tmp / REJECTS, Path(out))
            if kept is not None:
                exc.args = (f"{exc}\n  the rejected records are in {kept}",)
            raise
    return manifest


def _render_into(
    tmp: Path,
    recipe: Recipe,
    contract: Contract,
    renderer: RowRenderer,
    files: list[tuple[InputSpec, Path]],
    spill: _Spill,
    bar: Any,
    executor: Executor | None,
    workers: int,
) -> dict[str, Any]:
    """Both passes into the temp folder; returns the manifest written there."""
    from jarvis import __version__

    try:
        with (tmp / REJECTS).open("wb") as rejects_out:
            pool = (executor, workers) if executor is not None else None
            state = _pass_one(recipe, contract, renderer, files, spill, rejects_out, bar, pool)
        _check_option_tags(recipe, set(state.tags))
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        spill.close()
        if bar is not None:
            bar.render_finish()
    _check_rejects(recipe, state)
    plan = _plan(recipe, contract, state)
    _check_composition(recipe, contract, state, plan)
    rag, retrieval = None, None
    if contract.retrieval is not None:
        rag, retrieval = _retrieve_rows(tmp, recipe, contract, renderer, spill, state, plan)
    try:
        written = _pass_two(tmp, spill, plan, rag)
    finally:
        if rag is not None:
            rag.close()
    shutil.rmtree(spill.folder)
    if retrieval is not None:
        written[EXEMPLARS] = {
            "sha256": sha256_file(tmp / EXEMPLARS), "rows": retrieval["exemplars"],
        }  # fmt: skip
    shares = _rag_shares(tmp, contract)
    if state.reject_count:
        written[REJECTS] = {"sha256": sha256_file(tmp / REJECTS), "rows": state.reject_count}
    else:
        (tmp / REJECTS).unlink()
    manifest = _manifest(recipe, contract, state, plan, written, __version__)
    if shares is not None:
        manifest["rag"] = {"field": contract.rag_field, "rows_with_block": shares}
    if retrieval is not None:
        manifest["retrieval"] = retrieval
    (tmp / MANIFEST).write_bytes(_manifest_bytes(manifest))
    return manifest


def _keep_rejects(rejects: Path, out: Path) -> Path | None:
    """Move a failed run's rejects to `<out>.rejects.jsonl`; None when there are none.

    An existing file of that name is replaced only when it is a jarvis rejects file.
    """
    if not rejects.is_file() or rejects.stat().st_size == 0:
        return None
    dest = out.absolute().parent / f"{out.name}.{REJECTS}"
    if dest.exists():
        with dest.open("rb") as fh:
            first = fh.readline()
        try:
            entry = orjson.loads(first)
        except orjson.JSONDecodeError:
            entry = None
        if not (isinstance(entry, dict) and {"file", "line", "reason", "raw"} <= entry.keys()):
            return None
    os.replace(rejects, dest)
    return dest


def _progress_bar(files: list[tuple[InputSpec, Path]]) -> Any:
    import click

    total = sum(max(p.stat().st_size, 1) for _, p in files)
    bar = click.progressbar(length=total, label="rendering", file=sys.stderr)
    bar.render_progress()
    return bar


def _check_rejects(recipe: Recipe, state: _State) -> None:
    invalid = state.reject_count - state.overlength
    if state.total == 0 or invalid / state.total <= recipe.max_reject_rate:
        return
    first = state.rejects[0]
    more = "\n".join(f"  {line}" for line in state.rejects[1:])
    raise InputError(
        f"{first}\n{more + chr(10) if more else ''}"
        f"  {invalid} of {state.total} records rejected ({invalid / state.total:.2%}), above "
        f"--max-reject-rate {recipe.max_reject_rate:g}"
    )


def _manifest(
    recipe: Recipe,
    contract: Contract,
    state: _State,
    plan: _Plan,
    files: dict[str, dict[str, Any]],
    version: str,
) -> dict[str, Any]:
    tokens = recipe.tokenizer is not None
    splits = {
        name: _split_summary(recipe, contract, state, plan, s, tokens)
        for s, name in enumerate(SPLITS)
        if f"{name}.jsonl" in files
    }
    return {
        "jarvis_version": version,
        "contract": {
            "name": contract.name,
            "version": contract.version,
            "ref": contract.ref,
            "fingerprint": contract.fingerprint,
            "root": str(contract.root),
        },
        "format": recipe.format,
        "recipe": _stored_recipe(recipe, contract),
        "inputs": [
            {
                "path": i.path,
                "tag": i.tag,
                "sha256": i.sha256,
                "records": i.records,
                "accepted": i.accepted,
                "rejected": i.rejected,
                "duplicates": i.duplicates,
            }
            for i in state.inputs
        ],
        "records": {"read": state.total, "unique": len(state.tag_of)},
        "splits": splits,
        "files": files,
        "duplicates": state.duplicates,
        "rejects": state.reject_count,
        "rejects_overlength": state.overlength,
    }


def _stored_recipe(recipe: Recipe, contract: Contract) -> dict[str, Any]:
    """The recipe as the manifest stores it: input and local tokenizer paths made absolute,
    so `Recipe.build(**manifest["recipe"])` rebuilds the dataset from any working folder."""
    data = recipe.model_dump(mode="json")
    data["root"] = str(contract.root)
    data["inputs"] = [
        str(InputSpec(os.path.abspath(spec.path), spec.tag)) for spec in recipe.input_specs()
    ]
    if recipe.tokenizer is not None and Path(recipe.tokenizer).exists():
        data["tokenizer"] = os.path.abspath(recipe.tokenizer)
    return data


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def read_records(
    dataset_dir: str | os.PathLike[str], manifest: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Return the entries of a dataset's `records.jsonl`: `{"id", "split", "tag", "record"}`.

    Args:
        dataset_dir: a folder written by render-dataset.
        manifest: its manifest; when given, the file must have the sha256 it records.

    Raises:
        InputError: the file is missing, or a line is not such an entry (names file:line).
        DatasetError: the file changed since it was rendered.
    """
    path = Path(dataset_dir) / RECORDS
    if not path.is_file():
        raise InputError(f"{path}: missing; re-render the dataset with `jarvis render-dataset`")
    if manifest is not None:
        recorded = (manifest.get("files") or {}).get(RECORDS, {}).get("sha256")
        if recorded != sha256_file(path):
            raise DatasetError(
                f"{path}: changed since it was rendered (sha256 differs from the manifest); "
                "re-render the dataset with `jarvis render-dataset`"
            )
    entries: list[dict[str, Any]] = []
    for number, raw, item in read_jsonl(path):
        if not raw.strip():
            continue
        if not isinstance(item, dict) or not isinstance(item.get("record"), dict):
            raise InputError(f"{path}:{number}: not a records.jsonl entry")
        entries.append(item)
    return entries


def load_manifest(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a rendered dataset's manifest, refusing a folder mlx-lm could not train on.

    Args:
        dataset_dir: a folder written by `render-dataset`.

    Returns:
        The manifest dict.

    Raises:
        DatasetError: the folder is missing or empty, has no or a malformed `manifest.json`,
            or `train.jsonl` is missing or empty.
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such dataset folder; run `jarvis render-dataset`")
    if not any(folder.iterdir()):
        raise DatasetError(f"{folder}: the dataset folder is empty; run `jarvis render-dataset`")
    path = folder / MANIFEST
    if not path.is_file():
        raise DatasetError(
            f"{folder}: no {MANIFEST}; not a folder written by `jarvis render-dataset`"
        )
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed manifest: {exc}") from exc
    required = ("jarvis_version", "contract", "format", "recipe", "splits", "files")
    missing = [k for k in required if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise DatasetError(f"{path}: malformed manifest: missing {', '.join(missing)}")
    contract = manifest["contract"]
    if not isinstance(contract, dict) or not {"name", "version", "fingerprint"} <= contract.keys():
        raise DatasetError(f"{path}: malformed manifest: contract needs name, version, fingerprint")
    files = manifest["files"]
    if not isinstance(files, dict) or not isinstance(manifest["splits"], dict):
        raise DatasetError(f"{path}: malformed manifest: files and splits are mappings")
    inside = folder.resolve()
    for name, meta in files.items():
        # Every path a manifest names is a file of this folder: never `../x` or `/etc/shadow`.
        plain = name == Path(name).name and name not in (".", "..") and "\\" not in name
        if not plain or not (folder / name).resolve().is_relative_to(inside):
            raise DatasetError(
                f"{path}: files: {name!r} is not a file of the dataset folder; refused"
            )
        if not isinstance(meta, dict):
            raise DatasetError(f"{path}: files.{name}: expected {{sha256, rows}}")
    try:
        Recipe.model_validate(manifest["recipe"])
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise DatasetError(f"{path}: malformed manifest: recipe.{loc}: {first['msg']}") from exc
    train = folder / "train.jsonl"
    if not train.is_file() or train.stat().st_size == 0:
        state = "missing" if not train.is_file() else "empty"
        raise DatasetError(f"{train}: {state}; nothing to train on")
    return dict(manifest)


def manifest_root(manifest: Mapping[str, Any], root: str | os.PathLike[str] | None) -> str | None:
    """The contract root to read a dataset's contract from: `root` when given, else the root
    the manifest records (when it still exists), else None ($JARVIS_ROOT, the bundled root)."""
    if root is not None:
        return os.fspath(root)
    info = manifest.get("contract")
    recorded = info.get("root") if isinstance(info, Mapping) else None
    if isinstance(recorded, str) and (Path(recorded) / "contracts").is_dir():
        return recorded
    return None


def format_summary(manifest: Mapping[str, Any]) -> str:
    """Return the human summary table: rows per split and tag, shares, compliance, rejects."""
    splits: Mapping[str, Any] = manifest["splits"]
    names = [s for s in SPLITS if s in splits]
    tags = sorted({t for s in names for t in splits[s]["tags"]})
    header = ["tag", *names, "train share", "train compliant"]
    table = [header]
    train = splits.get("train", {})
    for tag in tags:
        cells = [tag]
        for s in names:
            cells.append(str(splits[s]["tags"].get(tag, {}).get("rows", 0)))
        info = train.get("tags", {}).get(tag, {})
        cells.append(f"{info.get('share', 0.0):.1%}")
        cells.append(f"{train.get('compliance', {}).get('per_tag', {}).get(tag, 0.0):.1%}")
        table.append(cells)
    total = ["total", *(str(splits[s]["rows"]) for s in names), "100.0%"]
    total.append(f"{train.get('compliance', {}).get('overall', 0.0):.1%}")
    table.append(total)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    c = manifest["contract"]
    out = [f"{c['ref']} ({c['fingerprint'][:12]})  format: {manifest['format']}", *lines]
    repeats = train.get("repeats") or {}
    if repeats:
        out.append("repeats in train: " + ", ".join(f"{t} x{n}" for t, n in repeats.items()))
    for name in names:
        stats = splits[name].get("tokens")
        if stats:
            out.append(
                f"tokens {name}: min {stats['min']}  mean {stats['mean']}  "
                f"p95 {stats['p95']}  max {stats['max']}"
            )
    retrieval = manifest.get("retrieval")
    if isinstance(retrieval, dict):
        shares = ", ".join(
            f"{name} {info['rows_with_exemplars']:.0%} (mean {info['mean_exemplars']:.1f})"
            for name in SPLITS
            if (info := retrieval["splits"].get(name))
        )
        out.append(
            f"exemplars: {retrieval['store']}, {retrieval['exemplars']} from the train split; "
            f"records with exemplars: {shares}"
        )
    out.append(
        f"duplicates dropped: {manifest['duplicates']}   rejects: {manifest['rejects']}"
        + (f" (see {REJECTS})" if manifest["rejects"] else "")
    )
    out += composition_warnings(manifest)
    return "\n".join(out)


# Below this share of training targets passing every output check, the adapter mostly
# learns other formats: the post-mortem trained on 0.05% and learned none.
LOW_COMPLIANCE = 0.5


def composition_warnings(manifest: Mapping[str, Any]) -> list[str]:
    """Return `warning: ...` lines about the train split that passed every threshold given.

    A tag with no training rows, and training targets that mostly fail the contract's own
    output checks (with the `--repeat` that would lift them past 50%, when a tag's targets
    do pass).
    """
    train = manifest["splits"].get("train") or {}
    tags: Mapping[str, Any] = train.get("tags") or {}
    out = []
    # A tag can lose every row to --on-overlength drop or rejects; say so, not just "0".
    for tag in sorted(tags):
        if not tags[tag].get("rows", 0):
            out.append(f"warning: tag {tag!r} has no training rows")
    compliance = train.get("compliance") or {}
    overall = float(compliance.get("overall", 1.0))
    rows = int(train.get("rows", 0))
    if not compliance.get("per_check") or not rows or overall >= LOW_COMPLIANCE:
        return out
    ref = manifest["contract"]["ref"]
    line = (
        f"warning: only {overall:.1%} of training targets pass every output check of {ref} "
        f"({round(overall * rows)} of {rows} rows): the adapter will mostly learn other formats"
    )
    per_tag = compliance.get("per_tag") or {}
    good = [t for t in sorted(tags) if per_tag.get(t, 0.0) >= 0.9 and tags[t].get("rows")]
    if good:
        tag = max(good, key=lambda t: (tags[t]["rows"], t))
        already = max((train.get("repeats") or {}).get(tag, 1), 1)
        n, share = tags[tag]["rows"] // already, per_tag[tag]
        # The smallest number k of extra copies (n rows each, `share` of them passing) with
        # (passed + k*n*share) / (rows + k*n) >= LOW_COMPLIANCE; share >= 0.9 > 0.5.
        need = LOW_COMPLIANCE * rows - overall * rows
        extra = max(math.ceil(round(need / (n * (share - LOW_COMPLIANCE)), 9)), 0)
        line += (
            f"; try --repeat {tag}={(1 + extra) * already} "
            f"and gate the run with --min-compliant {LOW_COMPLIANCE:g}"
        )
    else:
        line += (
            "; add records whose targets pass the checks, tagged (--input perfect=FILE), and "
            f"gate the run with --min-compliant {LOW_COMPLIANCE:g}"
        )
    out.append(line)
    return out
