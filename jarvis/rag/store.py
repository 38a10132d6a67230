"""The exemplar store: one SQLite file, an FTS5 index ranked by BM25, no server to run.

Layout (`PRAGMA application_id` marks a jarvis store, so `--force` replaces only one):

- `exemplar(n, id, thread, message, reply)`: one past exchange per row, `id` unique;
- `terms`: the FTS5 index of each message's terms (`jarvis.rag.terms`), rowid = `n`;
- `meta(key, value)`: the contract and retrieval key it was built for, the exemplar count,
  the content fingerprint and the fingerprints it had before (`history`, grown by `add`).

The fingerprint is a set hash (the sum of one sha256 per exemplar, modulo 2**256), so it
does not depend on insertion order and `add` updates it without reading the store.
Determinism: ranking is BM25 over the same content, ties broken by exemplar id.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sqlite3
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jarvis.errors import (
    InputError,
    OutputExistsError,
    OutputRefusedError,
    OutputWriteError,
    StoreError,
)
from jarvis.rag.terms import index_terms, query_terms

APPLICATION_ID = 0x4A525653  # "JRVS"
FORMAT = 2  # 2: the df table
_MOD = 1 << 256
# A reader waits this long for a writer's commit (and a writer for readers) before failing.
_BUSY_MS = 10_000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE exemplar (
    n INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    thread TEXT,
    message TEXT NOT NULL,
    reply TEXT NOT NULL
);
CREATE VIRTUAL TABLE terms USING fts5(body, tokenize = 'ascii');
CREATE TABLE df (term TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
"""
# A query keeps its rarest terms while their exemplar counts sum to at most this many (and
# its rarest one if that is in at most MAX_TERM_EXEMPLARS): FTS5 scores every row a term
# matches, so a common word costs milliseconds at 100,000 exemplars while adding little to
# BM25 (its IDF is near zero). A term in more exemplars than that is a stop word of the store.
POSTINGS_BUDGET = 256
MAX_TERM_EXEMPLARS = 1024


@dataclass(frozen=True, slots=True)
class StoredExemplar:
    """One past exchange: what was written to the persona, and the persona's reply.

    Attributes:
        id: the source record's id (unique in a store).
        thread: the record's thread (group key), or None.
        message: the query text of the record (e.g. the last incoming message).
        reply: the record's target.
    """

    id: str
    thread: str | None
    message: str
    reply: str

    def digest(self) -> int:
        """This exemplar's share of the store's set hash."""
        data = "\x00".join((self.id, self.thread or "", self.message, self.reply))
        return int.from_bytes(hashlib.sha256(data.encode("utf-8", "surrogatepass")).digest())


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved exemplar and its BM25 score (higher is more similar)."""

    exemplar: StoredExemplar
    score: float


def _fingerprint(key: str, count: int, total: int) -> str:
    return hashlib.sha256(f"{key}:{count}:{total:064x}".encode()).hexdigest()


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + ("?mode=ro" if readonly else "")
    conn = sqlite3.connect(
        uri, uri=True, timeout=_BUSY_MS / 1000, check_same_thread=False, isolation_level=None
    )
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    return conn


def is_store(path: Path) -> bool:
    """Whether `path` is a jarvis exemplar store (by its SQLite application id)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(100)
    except OSError:
        return False
    return (
        len(head) == 100
        and head[:16] == b"SQLite format 3\x00"
        and int.from_bytes(head[68:72], "big") == APPLICATION_ID
    )


class ExemplarStore:
    """A read-only view of a store file; safe to query while `add_to_store` writes.

    Raises:
        StoreError: the file is missing or not a jarvis store.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(
                f"{self.path}: no exemplar store (build one with `jarvis index build`)"
            )
        if not is_store(self.path):
            raise StoreError(f"{self.path}: not a jarvis exemplar store")
        try:
            self._conn = _connect(self.path, readonly=True)
            self._meta = self._read_meta()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: unreadable exemplar store: {exc}") from exc

    def _read_meta(self) -> dict[str, str]:
        rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if rows.get("format") != str(FORMAT):
            raise StoreError(
                f"{self.path}: exemplar store format {rows.get('format')!r}, this jarvis reads "
                f"{FORMAT}: rebuild it (`jarvis index build`, or render the dataset again)"
            )
        return rows

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> ExemplarStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def contract(self) -> str:
        """The contract name the store was built for."""
        return self._meta["contract"]

    @property
    def key(self) -> str:
        """The retrieval key: what defines an exemplar's content (query and target)."""
        return self._meta["key"]

    @property
    def fingerprint(self) -> str:
        """The content fingerprint (sha256 hex)."""
        return self._meta["fingerprint"]

    @property
    def count(self) -> int:
        """How many exemplars the store holds."""
        return int(self._meta["count"])

    @property
    def history(self) -> list[str]:
        """The fingerprints the store had before each `add`, oldest first."""
        return list(json.loads(self._meta.get("history", "[]")))

    def info(self) -> dict[str, Any]:
        """The store's metadata as a JSON-ready dict."""
        return {
            "path": str(self.path),
            "contract": self.contract,
            "retrieval_key": self.key,
            "exemplars": self.count,
            "fingerprint": self.fingerprint,
            "history": self.history,
            "built_by": self._meta.get("built_by", ""),
        }

    def exemplars(self) -> Iterator[StoredExemplar]:
        """Every exemplar, by id."""
        for row in self._conn.execute(
            "SELECT id, thread, message, reply FROM exemplar ORDER BY id"
        ):
            yield StoredExemplar(*row)

    def search(
        self,
        text: str,
        k: int,
        *,
        exclude_thread: str | None = None,
        exclude_id: str | None = None,
        exclude_reply: str | None = None,
        min_score: float = 0.0,
    ) -> list[Hit]:
        """Return the `k` exemplars most similar to `text` (BM25), ties broken by id.

        An empty or all-stop-word `text` returns []. Exclusions drop exemplars of a thread,
        an id, or a reply equal to `exclude_reply` (leave-one-out for training rows).
        """
        try:
            return self._search(text, k, exclude_thread, exclude_id, exclude_reply, min_score)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: exemplar store query failed: {exc}") from exc

    def _search(
        self,
        text: str,
        k: int,
        exclude_thread: str | None,
        exclude_id: str | None,
        exclude_reply: str | None,
        min_score: float,
    ) -> list[Hit]:
        terms = self._prune(query_terms(text))
        if not terms or k <= 0:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)  # terms are [a-z0-9]: nothing to escape
        limit = k + 8
        while True:
            rows = self._conn.execute(
                "SELECT e.id, e.thread, e.message, e.reply, r.rank FROM "
                "(SELECT rowid, rank FROM terms WHERE terms MATCH ? ORDER BY rank LIMIT ?) r "
                "JOIN exemplar e ON e.n = r.rowid",
                (match, limit),
            ).fetchall()
            rows.sort(key=lambda r: (r[4], r[0]))
            kept = [
                r
                for r in rows
                if -r[4] >= min_score
                and (exclude_thread is None or r[1] != exclude_thread)
                and r[0] != exclude_id
                and r[3] != exclude_reply
            ]
            # FTS5 returns rows best first: once the last fetched row ranks strictly below the
            # k-th kept one (or below min_score), no unfetched row can enter the top k.
            last = rows[-1][4] if rows else 0.0
            if len(rows) < limit or -last < min_score or (len(kept) >= k and last > kept[k - 1][4]):
                return [Hit(StoredExemplar(*r[:4]), -r[4]) for r in kept[:k]]
            limit *= 4

    def _prune(self, terms: list[str]) -> list[str]:
        """The query's rarest terms within `POSTINGS_BUDGET` (terms no exemplar has dropped)."""
        if not terms:
            return []
        marks = ",".join("?" * len(terms))
        counts = sorted(
            (n, t) for t, n in self._conn.execute(
                f"SELECT term, n FROM df WHERE term IN ({marks})", terms  # noqa: S608 - marks only
            )
        )  # fmt: skip
        kept: list[str] = []
        total = 0
        for n, term in counts:
            if (kept and total + n > POSTINGS_BUDGET) or n > MAX_TERM_EXEMPLARS:
                break
            kept.append(term)
            total += n
        return sorted(kept)


def _create(conn: sqlite3.Connection, contract: str, key: str, built_by: str) -> None:
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [
            ("format", str(FORMAT)),
            ("contract", contract),
            ("key", key),
            ("built_by", built_by),
            ("count", "0"),
            ("sum", "0"),
            ("fingerprint", _fingerprint(key, 0, 0)),
            ("history", "[]"),
        ],
    )


def _insert(conn: sqlite3.Connection, items: list[StoredExemplar], start: int) -> int:
    """Insert exemplars numbered from `start` (and their terms' counts); returns their
    set-hash sum."""
    conn.executemany(
        "INSERT INTO exemplar (n, id, thread, message, reply) VALUES (?, ?, ?, ?, ?)",
        ((start + i, e.id, e.thread, e.message, e.reply) for i, e in enumerate(items)),
    )
    df: Counter[str] = Counter()
    bodies = []
    for e in items:
        terms = index_terms(e.message)
        df.update(set(terms))
        bodies.append(" ".join(terms))
    conn.executemany(
        "INSERT INTO terms (rowid, body) VALUES (?, ?)",
        ((start + i, body) for i, body in enumerate(bodies)),
    )
    conn.executemany(
        "INSERT INTO df (term, n) VALUES (?, ?) "
        "ON CONFLICT (term) DO UPDATE SET n = n + excluded.n",
        sorted(df.items()),
    )
    return sum(e.digest() for e in items) % _MOD


def _set_totals(conn: sqlite3.Connection, key: str, count: int, total: int) -> str:
    fingerprint = _fingerprint(key, count, total)
    conn.executemany(
        "UPDATE meta SET value = ? WHERE key = ?",
        [(str(count), "count"), (f"{total:064x}", "sum"), (fingerprint, "fingerprint")],
    )
    return fingerprint


def _unique(items: Iterable[StoredExemplar], where: str) -> list[StoredExemplar]:
    """Sorted by id; an id given twice is refused unless both are the same exemplar."""
    by_id: dict[str, StoredExemplar] = {}
    for e in items:
        seen = by_id.get(e.id)
        if seen is not None and seen != e:
            raise InputError(f"{where}: id {e.id!r} is given twice with different content")
        by_id[e.id] = e
    return [by_id[i] for i in sorted(by_id)]


def build_store(
    path: str | os.PathLike[str],
    items: Iterable[StoredExemplar],
    *,
    contract: str,
    key: str,
    built_by: str = "",
    force: bool = False,
) -> str:
    """Write a new store atomically (a temp file, then a rename); returns its fingerprint.

    Raises:
        OutputExistsError: `path` exists and `force` is false.
        OutputRefusedError: `force`, but `path` is not a jarvis store.
        InputError: an id is given twice with different content.
        OutputWriteError: the disk is full or read-only.
    """
    dest = Path(path)
    if dest.exists() or dest.is_symlink():
        if not force:
            raise OutputExistsError(f"{dest}: already exists (pass --force to replace it)")
        if not dest.is_file() or dest.is_symlink() or not is_store(dest):
            raise OutputRefusedError(
                f"{dest}: not a jarvis exemplar store; --force replaces only a store jarvis "
                "wrote (choose another path)"
            )
    rows = _unique(items, str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode = OFF")  # a fresh temp file: nothing to roll back
            conn.execute("PRAGMA synchronous = OFF")
            # The bulk insert allocates a few small objects per exemplar and frees them all:
            # the cyclic collector would rescan the caller's whole heap many times over.
            collecting = gc.isenabled()
            gc.disable()
            try:
                with conn:
                    _create(conn, contract, key, built_by)
                    total = _insert(conn, rows, 1)
                    fingerprint = _set_totals(conn, key, len(rows), total)
            finally:
                if collecting:
                    gc.enable()
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except sqlite3.OperationalError as exc:
        raise OutputWriteError(f"{dest}: could not write the exemplar store: {exc}") from exc
    except OSError as exc:
        raise OutputWriteError(f"{dest}: could not write the exemplar store: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return fingerprint


def add_to_store(
    path: str | os.PathLike[str], items: Iterable[StoredExemplar], *, key: str
) -> tuple[int, int, str]:
    """Append exemplars in one transaction: readers see all of them or none.

    An exemplar already in the store (same id, same content) is skipped.

    Returns:
        (added, skipped, the new fingerprint).

    Raises:
        StoreError: not a jarvis store, or built for another retrieval key.
        InputError: an id already in the store (or given twice) with other content.
        OutputWriteError: the disk is full or read-only, or the store stayed locked.
    """
    dest = Path(path)
    ExemplarStore(dest).close()  # validates it is a store
    rows = _unique(items, str(dest))
    conn = _connect(dest, readonly=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta["key"] != key:
            raise StoreError(
                f"{dest}: built for another retrieval (key {meta['key'][:12]}, this contract "
                f"has {key[:12]}); build a new store with `jarvis index build`"
            )
        new: list[StoredExemplar] = []
        skipped = 0
        for e in rows:
            old = conn.execute(
                "SELECT thread, message, reply FROM exemplar WHERE id = ?", (e.id,)
            ).fetchone()
            if old is None:
                new.append(e)
            elif tuple(old) == (e.thread, e.message, e.reply):
                skipped += 1
            else:
                raise InputError(f"{dest}: id {e.id!r} is already in the store with other content")
        start = int(conn.execute("SELECT coalesce(max(n), 0) FROM exemplar").fetchone()[0]) + 1
        count = int(meta["count"]) + len(new)
        total = (int(meta["sum"], 16) + _insert(conn, new, start)) % _MOD
        fingerprint = meta["fingerprint"]
        if new:
            history = [*json.loads(meta["history"]), fingerprint]
            conn.execute("UPDATE meta SET value = ? WHERE key = 'history'", (json.dumps(history),))
            fingerprint = _set_totals(conn, key, count, total)
        conn.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise OutputWriteError(f"{dest}: could not add to the exemplar store: {exc}") from exc
        raise
    finally:
        conn.close()
    return len(new), skipped, fingerprint
