"""The tokeniser of the exemplar store: text to a sorted set of search terms.

FTS5's own `unicode61` tokeniser drops emoji (they are symbols, not letters) and keeps a run
of Chinese or Japanese characters as one token, so jarvis tokenises in Python and gives
FTS5 terms it cannot misread: `a<word>` for an ASCII word, `u<hex>` for anything else. User
text therefore never reaches FTS5's query syntax (`"NEAR(" OR *` is three plain words).
"""

from __future__ import annotations

import re
import unicodedata

# Scripts written without spaces: each character is a term (Han, kana, Thai, Lao, Khmer).
_NO_SPACE = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1780-\u17ff"
_TOKEN = re.compile(rf"[{_NO_SPACE}]|[^\W_{_NO_SPACE}]+|[^\w\s]")
_ASCII_WORD = re.compile(r"[a-z0-9]+")
# At most this many distinct terms in one query: a pasted essay cannot make a slow query.
MAX_QUERY_TERMS = 48

STOP_WORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her
    him his how i if in into is it its just me my no not of on or our she so than that the
    their them then there these they this to too was we were what when where which who why
    will with would you your""".split()
)


def words(text: str) -> list[str]:
    """Return the normalised words of `text`: NFKC, case-folded, diacritics removed.

    Emoji and other symbols are words of their own; punctuation is dropped.
    """
    if text.isascii():  # most texts: nothing to normalise, one regex (5x faster)
        return _ASCII_WORD.findall(text.lower())
    return _unicode_words(text)


def _unicode_words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    # Diacritics: decompose, drop the combining marks (also drops emoji variation selectors).
    bare = "".join(
        c for c in unicodedata.normalize("NFD", folded) if unicodedata.category(c) != "Mn"
    )
    out: list[str] = []
    for match in _TOKEN.finditer(bare):
        token = match.group()
        if len(token) == 1 and not token.isalnum() and unicodedata.category(token) != "So":
            continue  # punctuation, modifiers, joiners
        out.append(unicodedata.normalize("NFC", token))
    return out


def encode(word: str) -> str:
    """One word as an FTS5 term of `[a-z0-9]` only."""
    if word.isascii() and word.isalnum():
        return "a" + word
    return "u" + word.encode("utf-8").hex()


def index_terms(text: str) -> list[str]:
    """The terms stored for an exemplar's message, in order (stop words kept out)."""
    if text.isascii():  # every word is [a-z0-9]: its term is "a" + word
        return ["a" + w for w in _ASCII_WORD.findall(text.lower()) if w not in STOP_WORDS]
    return [encode(w) for w in words(text) if w not in STOP_WORDS]


def query_terms(text: str) -> list[str]:
    """The distinct terms of a query, sorted; empty for an empty or all-stop-word text."""
    found = sorted({encode(w) for w in words(text) if w not in STOP_WORDS})
    return found[:MAX_QUERY_TERMS]
