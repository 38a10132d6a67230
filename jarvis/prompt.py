"""The public prompt builders: runtime prompts and training rows from one contract."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from jarvis.chat import apply_chat_template, chatml, special_tokens
from jarvis.contract import Contract, load_contract
from jarvis.render import SpecialTokenPolicy

if TYPE_CHECKING:
    from jarvis.rag.store import ExemplarStore

Exemplars = Union[str, os.PathLike[str], "ExemplarStore", None]


def token_policy(contract: Contract, tokenizer: Any | None) -> SpecialTokenPolicy:
    """Return the contract's special-token policy, extended with `tokenizer`'s special tokens."""
    return contract.special_token_policy(special_tokens(tokenizer) if tokenizer is not None else ())


@dataclass(frozen=True)
class Prompt:
    """A runtime prompt: the messages a model sees, and the contract that made them.

    Attributes:
        messages: `{"role", "content"}` dicts (system, user); no assistant turn.
        contract: `name@version` of the contract.
        fingerprint: the contract's fingerprint.
    """

    messages: list[dict[str, str]]
    contract: str
    fingerprint: str
    checks: list[dict[str, dict[str, Any]]] = field(default_factory=list, repr=False)

    @property
    def system(self) -> str:
        """The system prompt (the static, cacheable prefix)."""
        return self.messages[0]["content"]

    @property
    def user(self) -> str:
        """The user message content."""
        return self.messages[-1]["content"]

    def render(self, tokenizer: Any, *, enable_thinking: bool | None = None) -> str:
        """Render the final prompt string through `tokenizer`'s chat template, as mlx-lm does."""
        return str(
            apply_chat_template(
                tokenizer,
                self.messages,
                add_generation_prompt=True,
                enable_thinking=enable_thinking,
            )
        )

    def tokens(self, tokenizer: Any, *, enable_thinking: bool | None = None) -> list[int]:
        """Return the prompt's token ids through `tokenizer`'s chat template."""
        return list(
            apply_chat_template(
                tokenizer,
                self.messages,
                add_generation_prompt=True,
                tokenize=True,
                enable_thinking=enable_thinking,
            )
        )

    def chatml(self) -> str:
        """Render the prompt as plain ChatML, without a tokenizer."""
        return chatml(self.messages, add_generation_prompt=True)


def build_prompt(
    record: Mapping[str, Any],
    *,
    contract: str | Contract = "reply",
    root: str | os.PathLike[str] | None = None,
    tokenizer: Any | None = None,
    exemplars: Exemplars = None,
) -> Prompt:
    """Build the runtime prompt for any contract from an input record (target ignored).

    Args:
        record: an input record of the contract's schema; its target field is ignored.
        contract: contract ref or a loaded `Contract`.
        root: contract root (default `$JARVIS_ROOT`, else the bundled root).
        tokenizer: if given, its special tokens are refused (or escaped) too.
        exemplars: an exemplar store (path or open `ExemplarStore`) for a contract with a
            `retrieval:` block: its RAG block is retrieved exactly as training rows were.

    Returns:
        The runtime `Prompt`.

    Raises:
        RecordError: the record fails the schema (the error names the field), or carries
            the RAG field for a contract that retrieves it.
        SpecialTokenError: a value holds a chat control string the contract refuses.
        ContractMismatchError: a store built for another contract or retrieval.
    """
    c = load_contract(contract, root=root)
    runtime = {k: v for k, v in record.items() if k != c.target_field}
    if c.retrieval is not None or exemplars is not None:
        from jarvis.rag.retrieve import fill_exemplars

        runtime = fill_exemplars(c, exemplars, runtime)
    model = c.validate(runtime)
    messages = c.messages(model, with_target=False, policy=token_policy(c, tokenizer))
    return Prompt(messages, c.ref, c.fingerprint, c.spec.checks)


def build_simple_reply_prompt(
    messages: Sequence[Mapping[str, str]],
    *,
    contract: str | Contract = "reply",
    retrieved: Sequence[Mapping[str, str]] | None = None,
    exemplars: Exemplars = None,
    thread: str | None = None,
    root: str | os.PathLike[str] | None = None,
    tokenizer: Any | None = None,
) -> Prompt:
    """Build the runtime prompt for a texting thread, exactly as training rendered it.

    Args:
        messages: the conversation, oldest first, as `{"sender", "text"}` dicts.
        contract: contract ref (default the latest `reply`).
        retrieved: your own exemplars `{"message", "reply"}` (the RAG block), for a
            version without retrieval (reply@1).
        exemplars: an exemplar store (path or `ExemplarStore`) for a version with retrieval
            (reply@2): the RAG block is retrieved from it as training rows were.
        thread: the thread id; its own exemplars are left out (as in training).
        root: contract root (default `$JARVIS_ROOT`, else the bundled root).
        tokenizer: if given, its special tokens are refused (or escaped) too.

    Returns:
        The `Prompt`; `.messages` is what the model sees, `.render(tokenizer)` the final string.

    Raises:
        RecordError: a message is malformed (the error names the field).
        SpecialTokenError: a message holds a chat control string.
    """
    record: dict[str, Any] = {"messages": [dict(m) for m in messages]}
    if retrieved is not None:
        record["retrieved"] = [dict(r) for r in retrieved]
    if thread is not None:
        record["thread"] = thread
    return build_prompt(
        record, contract=contract, root=root, tokenizer=tokenizer, exemplars=exemplars
    )


def render_example(
    record: Mapping[str, Any],
    *,
    contract: str | Contract = "reply",
    root: str | os.PathLike[str] | None = None,
    tokenizer: Any | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Render one input record as an mlx-lm chat training row `{"messages": [...]}`.

    The row's messages without the final assistant message equal the runtime prompt's
    messages for the same record, exactly.

    Raises:
        RecordError: the record fails the schema or has no target.
        SpecialTokenError: a value holds a chat control string.
    """
    c = load_contract(contract, root=root)
    policy = token_policy(c, tokenizer)
    return {"messages": c.messages(c.validate(record), with_target=True, policy=policy)}
