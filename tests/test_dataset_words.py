"""ASCII text word by word: Rust's ids on every supported pre-tokenizer, else no shortcut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from jarvis.dataset.tokens import SegmentEncoder
from jarvis.dataset.words import ASCII, LATIN, Words, _splitter, split_pattern
from tokenizer_fixture import QWEN_SPLIT, WORDS, make_tokenizer


def _fast(folder: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module", params=WORDS)
def fast(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _fast(make_tokenizer(tmp_path_factory.mktemp("tok"), words=request.param))


_BUILT: dict[int, Words | None] = {}


def _words(fast: Any) -> Words | None:
    """One encoder per tokenizer for all examples (each probes 2,000 texts)."""
    if id(fast) not in _BUILT:
        _BUILT[id(fast)] = Words.for_tokenizer(fast)
    return _BUILT[id(fast)]


_SEGMENTS: dict[int, SegmentEncoder | None] = {}


def _segments(fast: Any) -> SegmentEncoder | None:
    """One segment encoder per tokenizer for all examples (its words probe once)."""
    if id(fast) not in _SEGMENTS:
        _SEGMENTS[id(fast)] = SegmentEncoder.for_tokenizer(fast)
    return _SEGMENTS[id(fast)]


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
# Latin text: Latin-1, Latin Extended-A, general punctuation and currency signs.
LATIN_CHARS = st.characters(max_codepoint=0x20BF).filter(lambda c: LATIN.outside()(c) is None)
LATIN_EDGES = ["\u00a0", "’", "é", "²", "½", "ſ", "\u2009", "€", "“"]
PLAIN = st.lists(
    st.one_of(
        st.text(st.characters(max_codepoint=127), max_size=12),
        st.text(LATIN_CHARS, max_size=6),
        st.sampled_from(EDGES + LATIN_EDGES),
    ),
    max_size=14,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=PLAIN)
@example(text="a\x1c b\x1f \x0bc  \x0c\n d")
@example(text="x   \n\n  y it's 12345 'LL!!\n")
@example(text="Caf\u00e9 \u00a0\u00a0x it\u2019s \u00bd\u00b2 'ſ \u2003\u2003y")
def test_words_give_rusts_ids(fast: Any, text: str) -> None:
    # Words sees the text between added tokens (`SegmentEncoder` splits there first), and
    # Hypothesis also draws the code's own string constants, `<|im_end|>` among them.
    assume(not any(t.content in text for t in fast.get_added_tokens_decoder().values()))
    words = _words(fast)
    assert words is not None and words.chars is LATIN  # NFC or no normalizer: Latin too
    assert words.takes(text)
    assert words.encode(text) == fast.encode(text, add_special_tokens=False).ids


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(
        st.one_of(PLAIN, st.sampled_from(["<|im_start|>", "<|im_end|>", "ça va", "🎉", "我们"])),
        max_size=8,
    )
)
def test_segments_mix_ascii_words_and_rust(fast: Any, parts: list[str]) -> None:
    encoder = _segments(fast)
    assert encoder is not None and encoder.words is not None
    texts = ["".join(parts), "".join(reversed(parts))]
    want = [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
    assert encoder.encode_many(texts) == want


def test_the_words_cache_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = _fast(make_tokenizer(tmp_path / "tok", words="qwen"))
    words = Words.for_tokenizer(tok)
    assert words is not None
    monkeypatch.setattr("jarvis.dataset.words._WORDS_LIMIT", 8)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for n in range(20):  # 5 new words a text (" abbb", " accc", ...): 100 in all
        text = "".join(f" {letters[n]}{letters[k] * 3}" for k in range(5))
        assert words.encode(text) == tok.encode(text, add_special_tokens=False).ids
        assert len(words.cache) <= 8 + 5  # cleared once past the limit, then this text's


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
    elif change == "a custom pre-tokenizer (Python; it cannot be serialized)":

        class Whole:
            def pre_tokenize(self, pretok: Any) -> None:
                pass

        tok.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(Whole())
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
        "a custom pre-tokenizer (Python; it cannot be serialized)",
    ],
)
def test_a_pipeline_not_translated_gets_none(tmp_path: Path, change: str) -> None:
    assert Words.for_tokenizer(_fast(make_tokenizer(tmp_path / "ok", words="qwen")))
    assert Words.for_tokenizer(_changed(tmp_path, change)) is None


def test_a_normalizer_that_changes_latin_text_keeps_words_to_ascii(tmp_path: Path) -> None:
    from tokenizers import normalizers

    tok = _fast(make_tokenizer(tmp_path / "tok", words="qwen"))
    tok.normalizer = normalizers.NFKC()  # "²" -> "2", a no-break space -> " "
    words = Words.for_tokenizer(tok)
    assert words is not None and words.chars is ASCII
    assert words.takes("x2 y") and not words.takes("x² y")


def test_the_probe_catches_a_split_that_differs(tmp_path: Path) -> None:
    tok = _fast(make_tokenizer(tmp_path / "tok", words="qwen"))
    right = Words.for_tokenizer(tok)
    assert right is not None
    # A class table that forgot one space (\x0b, vertical tab) is right on ordinary text.
    pattern = split_pattern(QWEN_SPLIT)
    assert pattern is not None
    loose = pattern.replace("\\x0b", "")
    wrong = Words(tok.model, [_splitter(loose)], right.table)
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
def test_split_pattern_translates_unicode_classes(source: str, want: str) -> None:
    assert split_pattern(source) == want


@pytest.mark.parametrize(
    "source",
    [r"\w+", r"a.b", r"\p{Lu}", r"(?i)a", r"[[:alpha:]]", r"(?<n>a)", r"^a", r"[a&&b]", "a\\",
     r"[a", r"[\S]", r"\x41"],
)  # fmt: skip
def test_split_pattern_refuses_what_it_does_not_translate(source: str) -> None:
    assert split_pattern(source) is None
