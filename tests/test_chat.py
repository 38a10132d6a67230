"""Chat templates applied as mlx-lm applies them, without importing mlx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jarvis.chat import (
    apply_chat_template,
    chatml,
    has_thinking,
    load_tokenizer,
    special_tokens,
    token_prefix_divergence,
)
from tokenizer_fixture import CHATML, make_tokenizer

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
]


def test_builtin_chatml_equals_a_chatml_tokenizer_template(tmp_path: Path) -> None:
    tok = load_tokenizer(make_tokenizer(tmp_path / "tok", template=CHATML))
    for generation, messages in ((True, MESSAGES[:-1]), (False, MESSAGES)):
        rendered = apply_chat_template(tok, messages, add_generation_prompt=generation)
        assert rendered == chatml(messages, add_generation_prompt=generation)


def test_enable_thinking_default_follows_the_vocabulary(tmp_path: Path) -> None:
    # A template that shows the flag it was given: mlx-lm passes has_thinking by default.
    template = "{{ 'T' if enable_thinking else 'F' }}"
    plain = load_tokenizer(make_tokenizer(tmp_path / "plain", template=template))
    assert not has_thinking(plain)
    assert apply_chat_template(plain, MESSAGES, add_generation_prompt=False) == "F"
    assert (
        apply_chat_template(plain, MESSAGES, add_generation_prompt=False, enable_thinking=True)
        == "T"
    )
    folder = make_tokenizer(tmp_path / "think", template=template)
    thinking = load_tokenizer(folder)
    thinking.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    assert has_thinking(thinking)
    assert apply_chat_template(thinking, MESSAGES, add_generation_prompt=False) == "T"


def test_has_thinking_asks_a_fast_tokenizer_what_its_whole_vocabulary_would_say(
    tmp_path: Path,
) -> None:
    from jarvis.chat import _XTML, THINK_PAIRS

    def by_vocab(vocab: dict[str, int]) -> bool:
        pairs = any(a in vocab and b in vocab for a, b in THINK_PAIRS)
        return pairs or all(t in vocab for t in _XTML)

    class Slow:  # no fast backend: the whole vocabulary is read
        def __init__(self, vocab: dict[str, int]) -> None:
            self.vocab = vocab

        def get_vocab(self) -> dict[str, int]:
            return self.vocab

    cases = [
        (),
        ("<think>",),
        ("<think>", "</think>"),
        _XTML,
        _XTML[:-1],
        ("<|channel>", "<channel|>"),
    ]
    for n, added in enumerate(cases):
        tok = load_tokenizer(make_tokenizer(tmp_path / f"t{n}", added=added))
        assert has_thinking(tok) is by_vocab(tok.get_vocab()), added
        assert has_thinking(Slow(tok.get_vocab())) is by_vocab(tok.get_vocab()), added
    assert [has_thinking(Slow({t: 0 for t in c})) for c in cases] == [
        False,
        False,
        True,
        True,
        False,
        True,
    ]


def test_tokens_and_special_tokens(tmp_path: Path) -> None:
    tok = load_tokenizer(make_tokenizer(tmp_path / "tok"))
    prompt = apply_chat_template(tok, MESSAGES[:-1], add_generation_prompt=True, tokenize=True)
    full = apply_chat_template(tok, MESSAGES, add_generation_prompt=False, tokenize=True)
    assert all(isinstance(t, int) for t in full)
    assert token_prefix_divergence(prompt, full) is None
    assert token_prefix_divergence([*prompt[:-1], -1], full) == len(prompt) - 1
    assert token_prefix_divergence(full + [1], full) == len(full)
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= set(special_tokens(tok))


def test_added_tokens_without_the_special_flag_are_control_strings(tmp_path: Path) -> None:
    from jarvis.contract import load_contract
    from jarvis.dataset import Recipe, render_dataset
    from jarvis.engine import request_messages
    from jarvis.errors import InputError, SpecialTokenError

    folder = make_tokenizer(tmp_path / "tok", added=("<tool_call>", "<think>"))
    tok = load_tokenizer(folder)
    assert len(tok.encode("<tool_call>", add_special_tokens=False)) == 1
    assert {"<tool_call>", "<think>"} <= set(special_tokens(tok))
    # Serving: refused in a request.
    contract = load_contract("reply@1")
    with pytest.raises(SpecialTokenError, match="'<tool_call>'"):
        request_messages(contract, [{"sender": "Sam", "text": "x <tool_call> y"}], tokenizer=tok)
    # Training: the same record is a reject.
    raw = tmp_path / "a.jsonl"
    rows = [{"messages": [{"sender": "Sam", "text": f"hi {i}"}], "reply": "yo"} for i in range(99)]
    rows.append({"messages": [{"sender": "Sam", "text": "<think>hmm"}], "reply": "ok"})
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = Recipe(contract="reply@1", inputs=[str(raw)], tokenizer=str(folder))
    with pytest.raises(InputError, match=r"a.jsonl:100: .*'<think>'"):
        render_dataset(recipe, tmp_path / "out")


def test_row_tokens_per_mlx_lm_format(tmp_path: Path) -> None:
    from jarvis.chat import mlx_row_tokens

    tok = load_tokenizer(make_tokenizer(tmp_path / "tok"))
    chat = mlx_row_tokens(tok, {"messages": MESSAGES[1:]})
    completions = mlx_row_tokens(tok, {"prompt": "hi", "completion": "yo"})
    assert chat == completions  # mlx-lm builds completions rows as [user, assistant]
    text = mlx_row_tokens(tok, {"text": "hi"})
    assert text[-1] == tok.eos_token_id and text[:-1] == tok.encode("hi")
    assert mlx_row_tokens(tok, {"text": "hi<|im_end|>"}).count(tok.eos_token_id) == 1
