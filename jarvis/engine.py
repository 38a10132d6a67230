"""`ReplyEngine`: a base model plus a stamped adapter, serving prompts rendered by the contract.

The engine refuses an adapter trained on another contract version or base model, renders the
runtime prompt through the same contract and chat template mlx-lm applied in training,
prefills the contract's static system prefix once into a KV cache, and copies it per request.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jarvis.adapter import (
    RagShapeWarning,
    chat_template_sha256,
    check_adapter_weights,
    check_stamp,
    check_stamp_base,
    check_stamp_store,
    config_sha256,
    emit_warnings,
    fetch_model,
    model_config,
    rag_shape_warning,
    raise_or_allow,
    read_stamp,
    stamp_contract,
    weights_sha256,
)
from jarvis.chat import apply_chat_template, common_prefix_length, has_thinking, special_tokens
from jarvis.checks import CheckResult, run_checks
from jarvis.contract import Contract, load_contract
from jarvis.errors import InputError, JarvisError, ModelError, PromptTooLongError, RecordError

if TYPE_CHECKING:
    from jarvis.rag.store import ExemplarStore

# End-of-turn markers of common chat templates. One that the template uses but the tokenizer
# does not treat as EOS would let generation run past the end of the reply.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")

Request = Mapping[str, Any] | Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class Reply:
    """A finished reply with its timings and the contract's output checks.

    Attributes:
        text: the reply text (stop string and EOS excluded).
        finish_reason: "stop" (EOS or a stop string) or "length" (max_tokens).
        prompt_tokens: tokens in the full rendered prompt.
        generation_tokens: tokens generated (the EOS token counts, as in mlx-lm).
        cached_prefix_tokens: prompt tokens served from the prefix cache (0 without it).
        ttft_s: seconds from the call to the first generated token.
        tokens_per_s: decode speed after the first token.
        contract: the contract ref, e.g. "reply@1".
        fingerprint: the contract fingerprint.
        checks: one result per output check of the contract.
        adapter: the adapter folder, if any.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    generation_tokens: int
    cached_prefix_tokens: int
    ttft_s: float
    tokens_per_s: float
    contract: str
    fingerprint: str
    checks: list[CheckResult] = field(default_factory=list)
    adapter: str | None = None

    @property
    def passed(self) -> bool:
        """Whether every output check passed."""
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object `jarvis reply --json` prints."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "contract": self.contract,
            "fingerprint": self.fingerprint,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
            "cached_prefix_tokens": self.cached_prefix_tokens,
            "ttft_s": round(self.ttft_s, 6),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "checks": [c.to_dict() for c in self.checks],
            "adapter": self.adapter,
        }


@dataclass(frozen=True)
class ReplyChunk:
    """One generated token: the new text it releases, and on the last chunk the `Reply`.

    Attributes:
        text: text released by this token ("" while a possible stop string is held back).
        token: the token id.
        logprobs: the step's log-probability vector (an `mx.array`).
        reply: the finished `Reply`, set on the last chunk only.
    """

    text: str
    token: int
    logprobs: Any = field(repr=False)
    reply: Reply | None = None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def request_messages(
    contract: Contract, request: Request, *, tokenizer: Any = None, exemplars: Any = None
) -> list[dict[str, str]]:
    """Render a request as the chat messages the model sees (system, user), without mlx.

    Args:
        contract: the contract.
        request: an input record of the contract's schema (its target is ignored), or a
            message list `[{"sender", "text"}, ...]` for a contract with a `messages` field.
        tokenizer: its special tokens are refused (or escaped) like the contract's own.
        exemplars: an exemplar store (path or `ExemplarStore`) for a contract with
            retrieval: the RAG block is retrieved as in training.

    Raises:
        RecordError: the request fails the contract's schema.
        SpecialTokenError: a value holds a control string of the contract or tokenizer.
    """
    if isinstance(request, Mapping):
        record = dict(request)
    elif isinstance(request, list | tuple):
        record = {"messages": list(request)}
    else:
        raise RecordError(
            f"<request>: expected a record object or a message list, not {type(request).__name__}"
        )
    record.pop(contract.target_field, None)
    if contract.retrieval is not None or exemplars is not None:
        from jarvis.rag.retrieve import fill_exemplars

        record = fill_exemplars(contract, exemplars, record)
    extra = special_tokens(tokenizer) if tokenizer is not None else ()
    policy = contract.special_token_policy(extra)
    messages = contract.messages(contract.validate(record), with_target=False, policy=policy)
    for message in messages[1:]:
        try:
            message["content"].encode("utf-8")
        except UnicodeEncodeError as exc:
            # A lone surrogate (undecodable bytes from argv or a file) would crash the tokenizer.
            raise RecordError(
                f"{message['role']} content: not valid Unicode text (a lone surrogate at "
                f"character {exc.start}; is the input UTF-8?)"
            ) from exc
    return messages


def parse_request(
    contract: Contract, text: str, *, sender: str = "them", lines: bool = True
) -> Request:
    """Turn command-line text into a request for `contract`.

    JSON (a record object, or a `[{"sender", "text"}]` list) is used as is. Otherwise, for a
    contract with `messages`, each `sender: text` line is one message and a line without a
    `sender:` is from `sender` (with `lines=False` the whole text is one message from
    `sender`); for any other contract the text fills the first required string field
    (e.g. codegen's `instruction`).

    Raises:
        InputError: the text is empty or the contract has no field to put it in.
    """
    import orjson

    stripped = text.strip()
    if not stripped:
        raise InputError("empty message")
    try:
        stripped.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"the message is not UTF-8 text (undecodable byte at character {exc.start})"
        ) from exc
    if stripped[0] in "[{":
        try:
            # orjson: the same JSON rules as render-dataset (no lone surrogates, bounded depth).
            value = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"invalid JSON request: {exc}") from exc
        if isinstance(value, dict | list):
            return value
    fields = contract.schema.model_fields
    if "messages" in fields and not lines:
        return [{"sender": sender, "text": text}]
    if "messages" in fields:
        messages = []
        for line in stripped.splitlines():
            who, sep, said = line.partition(": ")
            named = sep and who.strip() and len(who) <= 40 and "\n" not in who
            messages.append(
                {"sender": who.strip(), "text": said} if named else {"sender": sender, "text": line}
            )
        return messages
    for name, info in fields.items():
        if name != contract.target_field and info.is_required() and info.annotation is str:
            return {name: stripped}
    raise InputError(f"{contract.ref}: give the request as a JSON object")


class ReplyEngine:
    """A base model (plus an optional jarvis-stamped adapter) bound to one prompt contract.

    Example:
        engine = ReplyEngine("path/to/model", "adapters/", contract="reply@1")
        engine.reply([{"sender": "Sam", "text": "you coming?"}]).text
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        adapter: str | os.PathLike[str] | None = None,
        *,
        contract: str | Contract | None = None,
        allow_mismatch: bool = False,
        root: str | os.PathLike[str] | None = None,
        prefix_cache: bool = True,
        exemplars: str | os.PathLike[str] | ExemplarStore | None = None,
    ) -> None:
        """Load the model and adapter, check the stamp, and prefill the system prefix.

        Args:
            model: a local model folder or a hub id; default: the base the adapter's stamp
                names.
            adapter: an mlx-lm adapter folder, normally written by `jarvis train`.
            contract: contract ref or `Contract` the prompts are rendered with; default: the
                one the adapter's stamp names (from the root it was trained from), else
                `reply`.
            allow_mismatch: load an adapter whose stamp does not match (warns instead).
            root: contract root (default `$JARVIS_ROOT`, else the bundled root).
            prefix_cache: prefill the static system prefix once and reuse it.
            exemplars: the exemplar store (a path, or an open `ExemplarStore`) the RAG block
                is retrieved from, for a contract with retrieval, as in training; an adapter
                trained with one needs one.

        Raises:
            ContractMismatchError: the adapter's stamp names another contract version,
                fingerprint, chat template or base model; or it was trained with an
                exemplar store and none is given (or the reverse).
            ModelError: the model or adapter cannot be loaded.
        """
        self.adapter = str(Path(adapter).absolute()) if adapter is not None else None
        self.warnings: list[str] = []
        self.stamp: dict[str, Any] | None = None
        where = f"adapter {adapter}"
        if adapter is not None:
            self.stamp = read_stamp(adapter)
        if contract is None:
            ref, stamp_root = stamp_contract(self.stamp, root)
            contract, root = ref or "reply", stamp_root
        self.contract = load_contract(contract, root=root)
        if model is None:
            base = (self.stamp or {}).get("base_model")
            if not isinstance(base, str):
                raise ModelError("no model given, and no adapter stamp names its base model")
            model = base
        self.model_id = os.fspath(model)
        self.exemplars: Any = None
        self.store_note: str | None = None
        if exemplars is not None:
            from jarvis.rag.retrieve import open_store

            self.exemplars = open_store(self.contract, exemplars)
        if adapter is not None:
            # Refuse a contract mismatch before paying for the model load.
            problems, notes = check_stamp(self.stamp, self.contract, where=where)
            store_problems, self.store_note = check_stamp_store(
                self.stamp, self.exemplars, where=where
            )
            problems += store_problems
            self.warnings += raise_or_allow(problems, allow_mismatch=allow_mismatch) + notes
        self._shape_warned: set[bool] = set()
        folder = fetch_model(self.model_id)
        # The base checks run before mlx-lm touches the adapter (on a base of another shape
        # it fails with a dump of parameter names): config and weights before loading
        # anything, the chat template on the loaded base's own tokenizer.
        self._check_base(
            where, allow_mismatch, base_config_sha256=config_sha256(folder),
            base_weights_sha256=weights_sha256(folder),
        )  # fmt: skip
        self.model, self.tokenizer = _load(str(folder))
        self._check_base(
            where, allow_mismatch, chat_template_sha=chat_template_sha256(self.tokenizer)
        )
        if self.adapter is not None:
            _attach_adapter(self.model, self.adapter)
        emit_warnings(self.warnings, stamped=self.stamp is not None)
        self.context_length = context_length(folder)
        self.enable_thinking = has_thinking(self.tokenizer)
        self._add_end_of_turn()
        self.prefix_tokens: list[int] = []
        self._prefix_cache: list[Any] | None = None
        if prefix_cache:
            self._build_prefix_cache()

    def _check_base(self, where: str, allow_mismatch: bool, **hashes: str | None) -> None:
        if self.stamp is None:
            return
        kwargs: dict[str, str | None] = {
            "chat_template_sha": None,
            "base_config_sha256": None,
            "base_weights_sha256": None,
            **hashes,
        }
        problems = check_stamp_base(self.stamp, where=where, base=self.model_id, **kwargs)
        self.warnings += raise_or_allow(problems, allow_mismatch=allow_mismatch)

    # -- prompt ---------------------------------------------------------------------------

    def messages(self, request: Request) -> list[dict[str, str]]:
        """Render a request as the chat messages the model sees (see `request_messages`)."""
        if self.contract.retrieval is None and self.contract.rag_field is not None:
            has_block = isinstance(request, Mapping) and bool(request.get(self.contract.rag_field))
            message = rag_shape_warning(self.stamp, has_block)
            if message is not None and has_block not in self._shape_warned:
                self._shape_warned.add(has_block)  # once per engine and direction
                warnings.warn(message, RagShapeWarning, stacklevel=3)
        return request_messages(
            self.contract, request, tokenizer=self.tokenizer, exemplars=self.exemplars
        )

    def render(self, request: Request) -> str:
        """Return the exact prompt string, through the base tokenizer's chat template."""
        return str(
            apply_chat_template(
                self.tokenizer,
                self.messages(request),
                add_generation_prompt=True,
                enable_thinking=self.enable_thinking,
            )
        )

    def prompt_tokens(self, request: Request) -> list[int]:
        """Return the prompt token ids, as mlx-lm's `apply_chat_template` produced in training."""
        return self._tokens(self.messages(request))

    def _tokens(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return list(
            apply_chat_template(
                self.tokenizer,
                messages,
                add_generation_prompt=True,
                tokenize=True,
                enable_thinking=self.enable_thinking,
            )
        )

    def check_length(self, prompt_tokens: int, max_tokens: int) -> None:
        """Refuse, before any prefill, a prompt that leaves no room for `max_tokens`.

        Raises:
            PromptTooLongError: prompt plus `max_tokens` exceed the model's context.
        """
        limit = self.context_length
        if limit is not None and prompt_tokens + max_tokens > limit:
            raise PromptTooLongError(
                f"the prompt has {prompt_tokens:,} tokens; the model's context is {limit:,} "
                f"tokens, so with max_tokens {max_tokens:,} a prompt may have at most "
                f"{max(limit - max_tokens, 0):,}"
            )

    # -- generation -----------------------------------------------------------------------

    def stream_reply(
        self,
        request: Request,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        use_cache: bool = True,
    ) -> Iterator[ReplyChunk]:
        """Generate a reply token by token.

        Args:
            request: an input record, or a `[{"sender", "text"}]` list (see `messages`).
            max_tokens: default the contract's `generation.max_tokens`.
            temperature: default the contract's; 0 is greedy.
            top_p: default the contract's.
            seed: seeds mlx's sampler for a reproducible reply.
            stop: stop strings (default the contract's); `[]` disables them.
            use_cache: start from the prefilled system prefix when the prompt has it.

        Yields:
            One `ReplyChunk` per token; the last one carries the `Reply`.

        Raises:
            RecordError: the request fails the contract's schema.
        """
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        start = time.perf_counter()
        _release_streams_at_thread_exit()
        gen = self.contract.spec.generation
        limit = gen.max_tokens if max_tokens is None else max_tokens
        stops = [s for s in (gen.stop if stop is None else stop) if s]
        sampler = make_sampler(
            temp=gen.temperature if temperature is None else temperature,
            top_p=gen.top_p if top_p is None else top_p,
        )
        if seed is not None:
            mx.random.seed(seed)
        tokens = self.prompt_tokens(request)
        self.check_length(len(tokens), limit)
        cached, cache = self.prefix_cache_for(tokens) if use_cache else (0, None)

        text = ""
        emitted = 0
        finish = "length"
        n = 0
        first = last = start
        stream = stream_generate(
            self.model,
            self.tokenizer,
            mx.array(tokens[cached:]),
            max_tokens=limit,
            sampler=sampler,
            prompt_cache=cache,
        )
        try:
            for resp in stream:
                n += 1
                last = time.perf_counter()
                if n == 1:
                    first = last
                text += resp.text
                finish = resp.finish_reason or finish
                hit = _find_stop(text, stops, emitted)
                if hit is not None:
                    text, finish = text[:hit], "stop"
                    break
                if resp.finish_reason is not None:
                    break
                safe = len(text) - _held_back(text, stops) if stops else len(text)
                if safe > emitted:
                    chunk, emitted = text[emitted:safe], safe
                else:
                    chunk = ""
                yield ReplyChunk(chunk, resp.token, resp.logprobs)
        finally:
            stream.close()
        reply = Reply(
            text=text,
            finish_reason=finish,
            prompt_tokens=len(tokens),
            generation_tokens=n,
            cached_prefix_tokens=cached,
            ttft_s=first - start,
            tokens_per_s=(n - 1) / (last - first) if n > 1 and last > first else 0.0,
            contract=self.contract.ref,
            fingerprint=self.contract.fingerprint,
            checks=run_checks(text, self.contract.spec.checks),
            adapter=self.adapter,
        )
        if n:
            yield ReplyChunk(text[emitted:], resp.token, resp.logprobs, reply)
        else:  # pragma: no cover - stream_generate always yields at least one response
            yield ReplyChunk("", -1, None, reply)

    def prefix_cache_for(self, tokens: Sequence[int]) -> tuple[int, list[Any] | None]:
        """A private copy of the prefilled prefix cache for a prompt, and how many of its
        tokens it covers; `(0, None)` when the prompt does not start with the prefix."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if self._prefix_cache is None:
            return 0, None
        # At least one prompt token must remain for the model to produce logits.
        cached = min(common_prefix_length(self.prefix_tokens, tokens), len(tokens) - 1)
        trim = len(self.prefix_tokens) - cached
        if cached <= 0 or (trim and not can_trim_prompt_cache(self._prefix_cache)):
            return 0, None
        cache = copy.deepcopy(self._prefix_cache)
        if trim:
            trim_prompt_cache(cache, trim)
        return cached, cache

    def reply(self, request: Request, **options: Any) -> Reply:
        """Generate a whole reply; takes the same options as `stream_reply`.

        Returns:
            The `Reply`.
        """
        for chunk in self.stream_reply(request, **options):
            if chunk.reply is not None:
                return chunk.reply
        raise ModelError("generation ended without a reply")  # pragma: no cover

    def reply_batch(
        self,
        requests: Sequence[Request],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> list[Reply]:
        """Generate greedy replies to many requests at once, batched (mlx-lm's BatchGenerator).

        The same greedy text as `reply(request, temperature=0)` one at a time (tested), at a
        fraction of the time for many requests: prompts are prefilled and decoded together.

        Args:
            requests: records or message lists, as `stream_reply` takes.
            max_tokens: default the contract's `generation.max_tokens`.
            stop: stop strings (default the contract's); the text is cut at the first.
            batch_size: requests decoded together.

        Returns:
            One `Reply` per request, in order (timings are the batch's, shared).

        Raises:
            RecordError: a request fails the contract's schema (before any generation).
            PromptTooLongError: a prompt does not fit the context with `max_tokens`.
        """
        from mlx_lm.generate import batch_generate

        gen = self.contract.spec.generation
        limit = gen.max_tokens if max_tokens is None else max_tokens
        stops = [s for s in (gen.stop if stop is None else stop) if s]
        prompts = [self.prompt_tokens(r) for r in requests]  # validates every request first
        for tokens in prompts:
            self.check_length(len(tokens), limit)
        out: list[Reply] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            began = time.perf_counter()
            result = batch_generate(
                self.model, self.tokenizer, chunk, max_tokens=limit, return_token_ids=True
            )
            seconds = time.perf_counter() - began
            assert result.token_ids is not None
            for tokens, ids in zip(chunk, result.token_ids, strict=True):
                text = self.tokenizer.decode(ids)
                ended = len(ids) < limit  # batch_generate drops the EOS token it stopped on
                hit = _find_stop(text, stops, 0)
                if hit is not None:
                    text, ended = text[:hit], True
                out.append(
                    Reply(
                        text=text,
                        finish_reason="stop" if ended else "length",
                        prompt_tokens=len(tokens),
                        generation_tokens=len(ids) + (len(ids) < limit),
                        cached_prefix_tokens=0,
                        ttft_s=seconds,
                        tokens_per_s=sum(len(i) for i in result.token_ids) / seconds,
                        contract=self.contract.ref,
                        fingerprint=self.contract.fingerprint,
                        checks=run_checks(text, self.contract.spec.checks),
                        adapter=self.adapter,
                    )
                )
        return out

    # -- setup ----------------------------------------------------------------------------

    def _add_end_of_turn(self) -> None:
        template = str(getattr(self.tokenizer, "chat_template", None) or "")
        vocab = self.tokenizer.get_vocab()
        for token in END_OF_TURN:
            if token in template and token in vocab:
                self.tokenizer.add_eos_token(token)

    def _build_prefix_cache(self) -> None:
        import mlx.core as mx
        from mlx_lm.generate import generate_step
        from mlx_lm.models.cache import make_prompt_cache

        # The static prefix is what two prompts with different user text share; rendering
        # both (rather than the system message alone) is robust to template quirks.
        system = {"role": "system", "content": self.contract.system_prompt}
        a = self._tokens([system, {"role": "user", "content": "a"}])
        b = self._tokens([system, {"role": "user", "content": "b"}])
        prefix = a[: common_prefix_length(a, b)]
        if not prefix:
            return
        cache = make_prompt_cache(self.model)
        for _ in generate_step(mx.array(prefix), self.model, max_tokens=0, prompt_cache=cache):
            pass
        mx.eval([c.state for c in cache])
        self.prefix_tokens, self._prefix_cache = prefix, cache


class _StreamReleaser:
    """Destroys the mlx streams of a worker thread when that thread ends.

    mlx-lm generates on a thread-local stream; a worker thread that exits with its streams
    still alive makes the whole process abort at interpreter exit ("terminate called
    without an active exception", exit 134). A thread's `threading.local` data is dropped
    in that thread as it ends, so this object's `__del__` runs there.
    """

    def __del__(self) -> None:
        try:
            import mlx.core as mx

            mx.synchronize()
            mx.clear_streams()
        except Exception:  # noqa: BLE001, S110 - best effort at thread teardown
            pass


_THREAD_STATE = threading.local()


def _release_streams_at_thread_exit() -> None:
    """Arrange for this worker thread's mlx streams to be destroyed when it ends."""
    if threading.current_thread() is threading.main_thread():
        return
    if getattr(_THREAD_STATE, "releaser", None) is None:
        _THREAD_STATE.releaser = _StreamReleaser()


def _find_stop(text: str, stops: Sequence[str], emitted: int) -> int | None:
    """Return where the earliest stop string starts in `text`, searching from unreleased text."""
    best: int | None = None
    for stop in stops:
        i = text.find(stop, max(0, emitted - len(stop) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best


# config.json keys that give a model's context length, by model family.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(model_dir: Path | None) -> int | None:
    """Return the context length a model's `config.json` declares, or None when unknown."""
    config = model_config(model_dir)
    for key in _CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _load(model: str) -> tuple[Any, Any]:
    """Load a base model and its tokenizer through mlx-lm and evaluate every parameter now.

    Evaluating at once means no lazy array is left bound to this thread's stream, so the
    engine can generate from a worker thread (mlx-lm-facts 2.2).
    """
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import mlx.core as mx

    from jarvis.imports import transformers_scanned_once

    with transformers_scanned_once():
        from mlx_lm import load

    try:
        result: Any = load(model)
    except JarvisError:
        raise
    except Exception as exc:  # mlx-lm raises plain ValueError/FileNotFoundError/KeyError
        raise ModelError(f"cannot load {model}: {type(exc).__name__}: {exc}") from exc
    loaded, tokenizer = result
    mx.eval(loaded.parameters())
    return loaded, tokenizer


def _attach_adapter(model: Any, adapter: str) -> None:
    """Apply an adapter to a loaded base as `mlx_lm.load(adapter_path=...)` does."""
    import mlx.core as mx
    from mlx_lm.utils import load_adapters

    check_adapter_weights(adapter)
    try:
        load_adapters(model, adapter)
    except Exception as exc:  # mlx-lm raises plain ValueError/FileNotFoundError/KeyError
        raise ModelError(f"cannot load adapter {adapter}: {type(exc).__name__}: {exc}") from exc
    model.eval()
    mx.eval(model.parameters())
