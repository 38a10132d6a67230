"""Chat templates: apply a tokenizer's template exactly as mlx-lm does, without importing mlx.

mlx-lm's `TokenizerWrapper.apply_chat_template` silently passes
`enable_thinking=<tokenizer has think tokens>`; training (`tuner/datasets.py`) and serving
both go through it. `apply_chat_template` here passes the same value, so a raw
`transformers` tokenizer renders byte-identical prompts.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from jarvis.errors import ModelError

# The marker pairs mlx-lm 0.32 uses to decide `has_thinking` (tokenizer_utils._infer_thinking).
THINK_PAIRS = (
    ("<think>", "</think>"),
    ("<longcat_think>", "</longcat_think>"),
    ("<|think:start|>", "<|think:end|>"),
    ("<|channel>", "<channel|>"),
)
_XTML = ("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>")

Messages = Sequence[Mapping[str, str]]


# Answered once per tokenizer (a slow tokenizer's get_vocab() builds the whole vocabulary).
_THINKING: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def has_thinking(tokenizer: Any) -> bool:
    """Return mlx-lm's default for `enable_thinking` with this tokenizer."""
    if hasattr(tokenizer, "has_thinking"):
        return bool(tokenizer.has_thinking)
    try:
        return _THINKING[tokenizer]
    except (KeyError, TypeError):
        pass
    # A fast tokenizer answers per token (vocabulary and added tokens, as get_vocab holds
    # them) without building the whole dict: 0.18 s of every Qwen load.
    fast = getattr(tokenizer, "_tokenizer", None)
    if fast is not None and hasattr(fast, "token_to_id"):

        def known(token: str) -> bool:
            return fast.token_to_id(token) is not None

    else:
        known = tokenizer.get_vocab().__contains__
    found = any(known(a) and known(b) for a, b in THINK_PAIRS) or all(map(known, _XTML))
    try:
        _THINKING[tokenizer] = found
    except TypeError:  # not weak-referenceable: just don't cache
        pass
    return found


def apply_chat_template(
    tokenizer: Any,
    messages: Messages,
    *,
    add_generation_prompt: bool,
    tokenize: bool = False,
    enable_thinking: bool | None = None,
) -> Any:
    """Render `messages` through the tokenizer's chat template as mlx-lm would.

    Args:
        tokenizer: a `transformers` tokenizer or an mlx-lm `TokenizerWrapper`.
        messages: `{"role", "content"}` dicts.
        add_generation_prompt: append the assistant header (runtime prompts).
        tokenize: return token ids instead of a string.
        enable_thinking: override mlx-lm's default (`has_thinking(tokenizer)`).

    Returns:
        The rendered string, or a list of token ids.

    Raises:
        ModelError: the tokenizer has no chat template.
    """
    thinking = has_thinking(tokenizer) if enable_thinking is None else enable_thinking
    try:
        out = tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            tokenize=tokenize,
            enable_thinking=thinking,
            **({"return_dict": False} if tokenize else {}),
        )
    except ValueError as exc:
        raise ModelError(f"cannot apply the chat template: {exc}") from exc
    return list(out) if tokenize else out


def chatml(messages: Messages, *, add_generation_prompt: bool) -> str:
    """Render messages as plain ChatML (Qwen-style), with no tokenizer.

    Used for snapshots and `--dry-run` without a model.
    """
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """Load a tokenizer (a model or tokenizer folder, or a hub id) without importing mlx.

    Raises:
        ModelError: it cannot be loaded.
    """
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from jarvis.adapter import fetch_model
    from jarvis.imports import transformers_scanned_once

    with transformers_scanned_once():
        from transformers import AutoTokenizer

    folder = fetch_model(path)  # a hub id: cached, downloaded, or a fast clear error offline
    try:
        return AutoTokenizer.from_pretrained(os.fspath(folder))
    # The Rust tokenizer raises a plain Exception for a tokenizer.json it cannot read.
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{path}: cannot load a tokenizer: {exc}") from exc


_CONTROL: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()


def special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """Return every string a tokenizer turns into one control id.

    That is its special tokens and every added token that encodes as a single id, flagged
    special or not: Qwen's `<tool_call>`, `<|fim_prefix|>` and `<think>` are added tokens
    without the flag, yet in a message they become control ids all the same.
    """
    # An mlx-lm TokenizerWrapper keeps the transformers tokenizer in `_tokenizer`.
    inner = tokenizer if hasattr(tokenizer, "all_special_tokens") else tokenizer._tokenizer
    try:
        return _CONTROL[inner]
    except (KeyError, TypeError):
        pass
    found: set[str] = set(getattr(inner, "all_special_tokens", []) or [])
    decoder: Mapping[int, Any] = getattr(inner, "added_tokens_decoder", {}) or {}
    for added in decoder.values():
        content = str(added.content)
        if not content or content in found:
            continue
        if getattr(added, "special", False):
            found.add(content)
        elif len(inner.encode(content, add_special_tokens=False)) == 1:
            found.add(content)
    result = tuple(sorted(t for t in found if t))
    with contextlib.suppress(TypeError):  # not weak-referenceable: not cached
        _CONTROL[inner] = result
    return result


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Return how many leading tokens `a` and `b` share."""
    m = min(len(a), len(b))
    # The common case (a prompt and its row) in one C-level comparison of two lists.
    if isinstance(a, list) and isinstance(b, list) and a[:m] == b[:m]:
        return m
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def token_prefix_divergence(prefix: Sequence[int], full: Sequence[int]) -> int | None:
    """Return the first index where `prefix` is not a prefix of `full`, or None if it is."""
    n = common_prefix_length(prefix, full)
    return None if n == len(prefix) else n


def mlx_row_tokens(
    tokenizer: Any, row: Mapping[str, Any], *, enable_thinking: bool | None = None
) -> list[int]:
    """Tokenize a written training row exactly as mlx-lm's dataset classes will.

    Chat rows go through the chat template, completions rows as `[user, assistant]` (no
    system message), text rows through `encode` with special tokens plus EOS if missing.
    """
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row and "completion" in row:
        messages = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
    else:
        ids = list(tokenizer.encode(str(row.get("text", ""))))
        eos = tokenizer.eos_token_id
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        return ids
    return list(
        apply_chat_template(
            tokenizer,
            messages,
            add_generation_prompt=False,
            tokenize=True,
            enable_thinking=enable_thinking,
        )
    )
