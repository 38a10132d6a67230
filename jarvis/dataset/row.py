"""One validated record as an mlx-lm row, and its tokens as mlx-lm will count them."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import orjson

from jarvis.chat import token_prefix_divergence
from jarvis.contract import Contract
from jarvis.dataset.recipe import Recipe
from jarvis.errors import DatasetError, UsageError
from jarvis.render import SpecialTokenPolicy
from jarvis.schemas import Record, json_native

if TYPE_CHECKING:
    from jarvis.dataset.tokens import ChatSkeleton, CompiledChatTemplate, SegmentEncoder


class RowRenderer:
    """Renders one validated record as an mlx-lm row (and counts its tokens)."""

    def __init__(self, contract: Contract, recipe: Recipe) -> None:
        self.contract = contract
        self.recipe = recipe
        self.format = recipe.format
        # The dump a caller has renders the same values as the model (`json_native`).
        self.from_dump = json_native(contract.schema)
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
        self.skeletons: dict[tuple[tuple[str, ...], bool], ChatSkeleton | None] = {}
        self.segments: SegmentEncoder | None = None
        if self.batched:
            from jarvis.dataset.tokens import SegmentEncoder

            self.segments = SegmentEncoder.for_tokenizer(self.fast)
        if self.format == "text" and self.tokenizer is None:
            raise UsageError("--format text renders through a chat template: pass --tokenizer")
        if self.format == "completions" and contract.system_prompt:
            raise DatasetError(
                f"--format completions cannot keep the system prompt of {contract.ref}: mlx-lm "
                "builds completions rows as [user, assistant], so the model would be trained "
                "without the system prompt it sees at runtime; use --format chat"
            )

    @classmethod
    def before_tokenizer(
        cls, contract: Contract, recipe: Recipe, special: tuple[str, ...]
    ) -> RowRenderer:
        """A renderer of rows without the tokenizer, which has not loaded yet (`early`):
        the same rows as the renderer with it, given its control strings `special`.
        It counts no tokens, and cannot render `--format text`."""
        renderer = cls(contract, recipe.model_copy(update={"tokenizer": None}))
        renderer.policy = contract.special_token_policy(special)
        return renderer

    def render(
        self, model: Record | None, rid: str, dumped: dict[str, Any] | None = None
    ) -> tuple[bytes, str, list[dict[str, str]]]:
        """Return (row JSON, target text, messages): from the record's `record_key` dump,
        when the caller has it and the schema is JSON-native (`model` may then be None:
        `native.plain_dumper` made the dump), else from the model."""
        if dumped is not None and self.from_dump:
            messages = self.contract.dumped_messages(dumped, with_target=True, policy=self.policy)
        else:
            assert model is not None  # the plain path needs a JSON-native schema
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
        """`tokens` for many rows at once: each rendered to text (through the template's
        skeleton where one is proven, `tokens.ChatSkeleton`), then each distinct piece between
        added tokens encoded once (`SegmentEncoder`): plain pieces word by word where that is
        proven (`words.Words`), the others in one call of the fast tokenizer (Rust).

        Exact: the first batch is compared with `tokens` one row at a time; on any
        difference this renderer falls back to `tokens` for good.
        """
        if not self.batched or not items:
            return [self.tokens(m, r) for m, r in items]
        texts: list[str] = []
        for messages, _ in items:
            full = messages
            if self.format == "completions":
                full = [
                    {"role": "user", "content": messages[1]["content"]},
                    {"role": "assistant", "content": messages[-1]["content"]},
                ]
            texts += (self._chat_text(full, False), self._chat_text(messages[:-1], True))
        if self.segments is not None:
            encoded = self.segments.encode_many(texts)
        else:
            encoded = [e.ids for e in self.fast.encode_batch(texts, add_special_tokens=False)]
        out = [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]
        if not self.verified:
            self.verified = True
            sample = min(len(items), 32)
            if [self.tokens(m, r) for m, r in items[:sample]] != out[:sample]:
                self.batched = False
                return [self.tokens(m, r) for m, r in items]
        return out

    def _chat_text(self, messages: list[dict[str, str]], generation: bool) -> str:
        """The chat template's text for `messages`, through its skeleton where one is proven."""
        roles = tuple(m["role"] for m in messages)
        key = (roles, generation)
        try:
            skeleton = self.skeletons[key]
        except KeyError:
            from jarvis.dataset.tokens import ChatSkeleton

            skeleton = self.skeletons[key] = ChatSkeleton.probe(
                self.tokenizer, roles, generation=generation, thinking=self.thinking
            )
        if skeleton is not None:
            return skeleton.render([m["content"] for m in messages])
        if self.compiled is not None:
            return self.compiled.render(messages, generation)
        from jarvis.chat import apply_chat_template

        return str(
            apply_chat_template(
                self.tokenizer, messages, add_generation_prompt=generation,
                enable_thinking=self.thinking,
            )
        )  # fmt: skip

    @cached_property
    def compiled(self) -> CompiledChatTemplate | None:
        """The template's fast render where a row has no skeleton, if proven (probed once)."""
        from jarvis.dataset.tokens import CompiledChatTemplate

        return CompiledChatTemplate.probe(self.tokenizer, self.thinking)

    def show(self, ids: Sequence[int]) -> str:
        """Decode a few tokens for an error message."""
        return repr(self.tokenizer.decode(list(ids)))


def row_head(contract: Contract, format: str) -> bytes:
    """The bytes every row of `format` starts with: a chat row's system message, the same
    in every row (`Contract.messages` puts it first), else none."""
    if format != "chat":
        return b""
    system = orjson.dumps({"messages": [{"role": "system", "content": contract.system_prompt}]})
    return system[: -len(b"]}")] + b","


def prefix_error(
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
