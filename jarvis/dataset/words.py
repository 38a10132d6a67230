"""Plain text encoded word by word, as the fast tokenizer would, each distinct word once.

The fast tokenizer encodes a text (between added tokens) in three steps: normalize, split
into words (its pre-tokenizer), and run its model on each word. On ASCII text the common
normalizers (NFC, NFKC, NFD, NFKD) change nothing, and the common pre-tokenizers are
regexes whose Unicode classes (`\\p{L}`, `\\p{N}`, `\\s`) have plain ASCII equivalents. So
Python's `re` can find the words, and each distinct word needs the tokenizer's own model
once: a dictionary lookup instead of Rust's regex and `Encoding` per word (5x less per long
text). Where the normalizer is NFC or none, the same holds on Latin text: Latin-1, Latin
Extended-A, general punctuation and currency signs (up to U+20BF, Unicode 10.0, older than
the tables of any Python or tokenizers in use), without combining marks (so NFC has nothing
to compose). Supported: `Split`
(regex or string, isolated), `Digits`, `ByteLevel` (last), in a `Sequence`; anything else,
or any difference on probe texts that put every covered character in every neighbourhood,
means no `Words` (or one for ASCII alone). Other text keeps Rust's path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# GPT-2's split, which `ByteLevel(use_regex=True)` applies (tokenizers' byte_level.rs).
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Unicode White_Space within ASCII (\t \n \v \f \r and space): onig's `\s`. Python's `\s`
# would add \x1c-\x1f, which are not White_Space.
_SPACE = "\\t\\n\\x0b\\x0c\\r "
_LITERAL = {"r", "n", "t"}  # escapes with the same meaning in both engines
_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD"}  # the identity on ASCII
_WORDS_LIMIT = 1 << 16  # distinct words kept (Zipf: the frequent ones come back at once)
# White_Space beyond ASCII in the Latin blocks (U+2000 and U+2001 are not NFC-stable).
_WIDE_SPACES = {0xA0, *range(0x2002, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F}


@dataclass(frozen=True)
class Chars:
    """The characters a translation covers, and its classes as regex class contents."""

    codes: tuple[int, ...]  # every code point covered, ascending
    classes: dict[str, str]  # `s`, `d`, `p{L}`, `p{N}`
    flags: int

    @property
    def everything(self) -> str:
        """Regex class contents for every covered character."""
        return _class(self.codes)

    def outside(self) -> Callable[[str], object]:
        """A search for a character this set does not cover."""
        return re.compile(f"[^{self.everything}]").search


def _class(codes: Sequence[int]) -> str:
    """Regex class contents for these code points (ranges where they run on)."""
    out, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        first, last = (re.escape(chr(codes[k])) for k in (i, j))
        out.append(first if i == j else f"{first}-{last}")
        i = j + 1
    return "".join(out)


def _latin() -> Chars:
    import unicodedata

    blocks = [*range(0xA0, 0x180), *range(0x2000, 0x2070), *range(0x20A0, 0x20C0)]
    wide = [
        c for c in blocks
        if unicodedata.category(chr(c))[0] not in "MC"
        and unicodedata.normalize("NFC", chr(c)) == chr(c)
    ]  # fmt: skip
    letters = [c for c in wide if unicodedata.category(chr(c))[0] == "L"]
    numbers = [c for c in wide if unicodedata.category(chr(c))[0] == "N"]
    spaces = [c for c in wide if c in _WIDE_SPACES]
    return Chars(
        codes=(*range(0x80), *wide),
        classes={
            "s": _SPACE + _class(spaces),
            "d": "0-9",
            "p{L}": "A-Za-z" + _class(letters),
            "p{N}": "0-9" + _class(numbers),
        },
        flags=0,
    )


ASCII = Chars(
    codes=tuple(range(0x80)),
    classes={"s": _SPACE, "d": "0-9", "p{L}": "A-Za-z", "p{N}": "0-9"},
    flags=re.ASCII,
)
LATIN = _latin()


def split_pattern(source: str, chars: Chars = ASCII) -> str | None:
    """The Python `re` pattern that splits text of `chars` as the onig pattern `source`
    does, or None for a construct not translated here (the caller then keeps Rust's path)."""
    classes = chars.classes
    out: list[str] = []
    i, n, in_class = 0, len(source), False
    while i < n:
        c = source[i]
        if c == "\\":
            if i + 1 >= n:
                return None
            e = source[i + 1]
            if e == "p":
                m = re.match(r"p\{([LN])\}", source[i + 1 :])
                if m is None:
                    return None
                key, i = f"p{{{m.group(1)}}}", i + 1 + m.end()
            elif e in classes or e in _LITERAL or e == "S":
                key, i = e, i + 2
            elif not e.isalnum():
                out.append("\\" + e)  # an escaped punctuation character: literal in both
                i += 2
                continue
            else:
                return None  # \w, \b, \x.., back-references: not needed by known tokenizers
            if key in _LITERAL:
                out.append("\\" + key)
            elif key == "S":
                if in_class:
                    return None
                out.append(f"[^{classes['s']}]")
            else:
                out.append(classes[key] if in_class else f"[{classes[key]}]")
            continue
        if in_class:
            if c == "[" or source.startswith("&&", i):
                return None  # nested classes and intersections
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            head = "[^" if source.startswith("[^", i) else "["
            if source.startswith("]", i + len(head)):
                return None
            out.append(head)
            in_class, i = True, i + len(head)
            continue
        if c == "(":
            if source.startswith("(?", i):
                group = re.match(r"\(\?(:|!|=|<=|<!|>|i:)", source[i:])
                if group is None:
                    return None  # named groups, global flags
                out.append(group.group(0))
                i += group.end()
            else:
                out.append("(?:")  # capturing groups would change what findall returns
                i += 1
            continue
        if c in ".^$":
            return None
        out.append(c)
        i += 1
    return None if in_class else "".join(out)


def _splitter(pattern: str, chars: Chars = ASCII) -> Callable[[str], list[str]]:
    """`findall` for an isolated split: each match is a word, and so is each run of text
    between matches (the second alternative), as tokenizers' `Split` keeps both."""
    gap = f"(?:(?!(?:{pattern}))[{chars.everything}])+"
    return re.compile(f"(?:{pattern})|{gap}", chars.flags).findall


def _bytes_to_unicode() -> dict[int, str]:
    """ByteLevel's alphabet: printable bytes stand for themselves, the others are shifted."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + k) for k, b in enumerate(shifted)})
    return table


class Words:
    """Encode plain text word by word through a fast tokenizer's own model."""

    def __init__(
        self,
        model: Any,
        stages: list[Callable[[str], list[str]]],
        table: dict[int, str] | None,
        chars: Chars = ASCII,
    ) -> None:
        self.tokenize = model.tokenize
        self.stages = stages
        self.table = table  # ByteLevel's byte -> character map, or None
        self.chars = chars
        self._outside = chars.outside()
        self.cache: dict[str, list[int]] = {}

    def takes(self, text: str) -> bool:
        """Whether `text` is all characters this encoder covers."""
        return text.isascii() or (self.chars is not ASCII and self._outside(text) is None)

    @classmethod
    def for_tokenizer(cls, fast: Any) -> Words | None:
        """The encoder for `fast` (a `tokenizers.Tokenizer`): for Latin text where its
        normalizer is NFC or none, else for ASCII; None where its pipeline is not one
        translated here or differs on the probe texts."""
        try:
            return cls._for_tokenizer(fast)
        except Exception:  # a custom (Python) component, say: any failure means no shortcut
            return None

    @classmethod
    def _for_tokenizer(cls, fast: Any) -> Words | None:
        normalizer, pre, model = fast.normalizer, fast.pre_tokenizer, fast.model
        if fast.truncation or fast.padding or getattr(model, "dropout", None):
            return None
        # A normalized added token is matched inside the text, after the split at the others.
        decoder = fast.get_added_tokens_decoder()
        if any(t.normalized for t in decoder.values()) or pre is None:
            return None
        kinds = _types(json.loads(normalizer.__getstate__())) if normalizer is not None else set()
        if not kinds <= _NORMALIZERS:
            return None
        steps = json.loads(pre.__getstate__())
        latin = kinds <= {"NFC"}  # NFKC would change "²" and a no-break space
        for chars in (LATIN, ASCII) if latin else (ASCII,):
            built = _pipeline(steps, chars)
            if built is None:
                return None
            words = cls(model, *built, chars)
            if words.agrees_with(fast):
                words.cache.clear()  # the probes' words, thousands of odd ones
                return words
        return None

    def encode(self, text: str) -> list[int]:
        """`text`'s ids (all `takes`, no added token in it), as `encode(text).ids` gives."""
        first, *rest = self.stages
        found = first(text)
        for stage in rest:
            found = [w for piece in found for w in stage(piece)]
        cache = self.cache
        if len(cache) > _WORDS_LIMIT:
            cache.clear()
        ids: list[int] = []
        for word in found:
            got = cache.get(word)
            if got is None:
                table = self.table
                mapped = "".join([table[b] for b in word.encode()]) if table else word
                got = cache[word] = [t.id for t in self.tokenize(mapped)]
            ids += got
        return ids

    def agrees_with(self, fast: Any) -> bool:
        """Whether this encoder gives Rust's ids on every probe text."""
        texts = _probes(self.chars)
        batch = getattr(fast, "encode_batch_fast", None) or fast.encode_batch
        want = [e.ids for e in batch(texts, add_special_tokens=False)]
        return [self.encode(t) for t in texts] == want


def _types(spec: dict[str, Any]) -> set[str]:
    """The normalizer types in a normalizer's JSON (a `Sequence` flattened)."""
    if spec.get("type") == "Sequence":
        return {t for s in spec.get("normalizers", []) for t in _types(s)}
    return {str(spec.get("type"))}


def _pipeline(
    spec: dict[str, Any], chars: Chars
) -> tuple[list[Callable[[str], list[str]]], dict[int, str] | None] | None:
    """(the split stages, ByteLevel's table or None) for a pre-tokenizer's JSON, or None."""
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
    stages: list[Callable[[str], list[str]]] = []
    table = None
    for k, step in enumerate(steps):
        kind = step.get("type")
        pattern: str | None
        if kind == "ByteLevel":
            if step.get("add_prefix_space") or k != len(steps) - 1:
                return None
            table = _bytes_to_unicode()
            if not step.get("use_regex", True):
                continue
            pattern = split_pattern(_GPT2, chars)
        elif kind == "Split":
            if step.get("behavior") != "Isolated" or step.get("invert"):
                return None
            source = step.get("pattern", {})
            if "Regex" in source:
                pattern = split_pattern(source["Regex"], chars)
            elif "String" in source:
                pattern = re.escape(source["String"]) if source["String"] else None
            else:
                pattern = None
        elif kind == "Digits":
            # Rust's `char::is_numeric`: every N category, as \\p{N}.
            numbers = f"[{chars.classes['p{N}']}]"
            pattern = numbers if step.get("individual_digits") else numbers + "+"
        else:
            return None
        if pattern is None:
            return None
        stages.append(_splitter(pattern, chars))
    return (stages, table) if stages else None


def _probes(chars: Chars) -> list[str]:
    """Texts that put every character `chars` covers beside letters, digits, spaces,
    newlines, apostrophes and itself, at the start and end of a text, plus runs of each
    class."""
    texts = []
    for c in map(chr, chars.codes):
        texts += [
            f"{c}a{c}b {c} {c}{c}1{c}23 4567{c}'s{c}'LL x{c}\n{c}\r\n  {c}  \t{c}",
            f"{c}",
            f" {c}",
            f"{c}  ",
            f"ab{c}{c}{c}  \n'{c} '{c}{c} {c}'",
        ]
    texts += [
        "I'm here, you're there; it's 12:30 and they've 4,500 Items!!\n\nOK?  \n  \n\tEnd. ",
        "'S 'T 'RE 'VE 'M 'LL 'D 's't're've'm'll'd don't DON'T",
        "a  b   c    \n\n\n   d\r\r\n \t \n x  ",
        "123456789 1 12 123 1234 a1b22c333 -1.5e10 0x1F",
        "def f(a, b):\n    return a + b  # sum\n\n\n### Usage\n",
        "",
    ]
    if chars is not ASCII:
        texts += [
            "Café crème, naïve façade: “quoted” — it’s ½ of €12 ²³ at 10\u00a0km … ſt",
            "\u2003\u2003x\u202f\u2009y \u00a0 \u2028z\u205f",
        ]
    return texts
