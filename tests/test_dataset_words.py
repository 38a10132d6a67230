"""ASCII text word by word: Rust's ids on every supported pre-tokenizer, else no shortcut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jarvis.dataset.tokens import SegmentEncoder
from jarvis.dataset.words import AsciiWords, _splitter, ascii_pattern
from tokenizer_fixture import QWEN_SPLIT, WORDS, make_tokenizer


def _fast(folder: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module", params=WORDS)
def fast(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _fast(make_tokenizer(tmp_path_factory.mktemp("tok"), words=request.param))


# Runs of each class that the split regexes treat apart: spaces before letters, newlines,
# contractions in both cases, digit runs, punctuation before newlines, \x1c (not a space).
EDGES = [
    "  ",
    " ",
    "\n",
    "\r\n",
    "\t",
    "'s",
    "'LL",
    "'Re",
    "123",
    "4567",
    "!!",
    ".\n",
    "\x1c",
    "\x0b",
]
ASCII = st.lists(
    st.one_of(st.text(st.characters(max_codepoint=127), max_size=12), st.sampled_from(EDGES)),
    max_size=14,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=ASCII)
@example(text="a\x1c b\x1f \x0bc  \x0c\n d")
@example(text="x   \n\n  y it's 12345 'LL!!\n")
def test_ascii_words_give_rusts_ids(fast: Any, text: str) -> None:
    words = AsciiWords.for_tokenizer(fast)
    assert words is not None
    assert words.encode(text) == fast.encode(text, add_special_tokens=False).ids


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(
        st.one_of(ASCII, st.sampled_from(["<|im_start|>", "<|im_end|>", "ça va", "🎉", "我们"])),
        max_size=8,
    )
)
def test_segments_mix_ascii_words_and_rust(fast: Any, parts: list[str]) -> None:
    encoder = SegmentEncoder.for_tokenizer(fast)
    assert encoder is not None and encoder.words is not None
    texts = ["".join(parts), "".join(reversed(parts))]
    want = [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
    assert encoder.encode_many(texts) == want


def _changed(tmp_path: Path, change: str) -> Any:
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers

    tok = _fast(make_tokenizer(tmp_path / "tok", words="qwen"))
    if change == "a normalizer that lowercases":
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    elif change == "a Metaspace pre-tokenizer":
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
    elif change == "ByteLevel adding a prefix space":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    elif change == "a split that removes its matches":
        tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="removed")
    elif change == "a regex with a class not translated":
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|\W+"), behavior="isolated")
    elif change == "an added token matched after normalizing":
        tok.add_tokens([AddedToken("<tool_call>", normalized=True)])
    elif change == "truncation":
        tok.enable_truncation(8)
    return tok


@pytest.mark.parametrize(
    "change",
    [
        "a normalizer that lowercases",
        "a Metaspace pre-tokenizer",
        "ByteLevel adding a prefix space",
        "a split that removes its matches",
        "a regex with a class not translated",
        "an added token matched after normalizing",
        "truncation",
    ],
)
def test_a_pipeline_not_translated_gets_none(tmp_path: Path, change: str) -> None:
    assert AsciiWords.for_tokenizer(_fast(make_tokenizer(tmp_path / "ok", words="qwen")))
    assert AsciiWords.for_tokenizer(_changed(tmp_path, change)) is None


def test_the_probe_catches_a_split_that_differs(tmp_path: Path) -> None:
    tok = _fast(make_tokenizer(tmp_path / "tok", words="qwen"))
    right = AsciiWords.for_tokenizer(tok)
    assert right is not None
    # A class table that forgot one space (\x0b, vertical tab) is right on ordinary text.
    pattern = ascii_pattern(QWEN_SPLIT)
    assert pattern is not None
    loose = pattern.replace("\\x0b", "")
    wrong = AsciiWords(tok.model, [_splitter(loose)], right.table)
    assert wrong.encode("a b") == right.encode("a b")  # the same on ordinary text
    assert not wrong.agrees_with(tok)


@pytest.mark.parametrize(
    "source, want",
    [
        (r"\p{L}+|\p{N}{1,3}", "[A-Za-z]+|[0-9]{1,3}"),
        (r"[^\r\n\p{L}\p{N}]?\p{L}+", "[^\\r\\nA-Za-z0-9]?[A-Za-z]+"),
        (
            r"\s+(?!\S)|\s+",
            "[\\t\\n\\x0b\\x0c\\r ]+(?![^\\t\\n\\x0b\\x0c\\r ])|[\\t\\n\\x0b\\x0c\\r ]+",
        ),
        (r"(?i:'s|'t)|(a)\.", "(?i:'s|'t)|(?:a)\\."),
    ],
)
def test_ascii_pattern_translates_unicode_classes(source: str, want: str) -> None:
    assert ascii_pattern(source) == want


@pytest.mark.parametrize(
    "source",
    [r"\w+", r"a.b", r"\p{Lu}", r"(?i)a", r"[[:alpha:]]", r"(?<n>a)", r"^a", r"[a&&b]", "a\\",
     r"[a", r"[\S]", r"\x41"],
)  # fmt: skip
def test_ascii_pattern_refuses_what_it_does_not_translate(source: str) -> None:
    assert ascii_pattern(source) is None
