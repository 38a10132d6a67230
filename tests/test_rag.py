"""The exemplar store and retrieval: tokenisation, BM25 over real SQLite FTS5, determinism,
leave-one-out, hostile queries, atomic and concurrent `add`."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract_root import copy_root
from jarvis import load_contract
from jarvis.errors import (
    ContractError,
    ContractMismatchError,
    InputError,
    OutputExistsError,
    OutputRefusedError,
    StoreError,
)
from jarvis.rag.build import read_exemplars
from jarvis.rag.retrieve import exemplar_of, open_store, query_text, retrieve
from jarvis.rag.store import (
    ExemplarStore,
    StoredExemplar,
    add_to_store,
    build_store,
    is_store,
)
from jarvis.rag.terms import _unicode_words, query_terms, words

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "reply" / "threads.jsonl"
REPLY2 = load_contract("reply@2")
KEY = str(REPLY2.retrieval_key)


def _ex(i: str, message: str, reply: str = "ok", thread: str | None = None) -> StoredExemplar:
    return StoredExemplar(i, thread, message, reply)


def _store(tmp_path: Path, items: list[StoredExemplar], name: str = "s.sqlite") -> Path:
    path = tmp_path / name
    build_store(path, items, contract="reply", key=KEY)
    return path


def test_words_fold_case_diacritics_and_keep_emoji_and_cjk() -> None:
    assert words("Café RÉSUMÉ naïve") == ["cafe", "resume", "naive"]
    assert words("ok 👍🏽 😂😂") == ["ok", "👍", "😂", "😂"]
    assert words("你好 hello") == ["你", "好", "hello"]
    assert words("Привет, мир!") == ["привет", "мир"]
    assert words("hello_world--x") == ["hello", "world", "x"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_the_ascii_fast_path_equals_the_unicode_path(text: str) -> None:
    assert words(text) == _unicode_words(text)


def test_query_keeps_its_rarest_terms(tmp_path: Path) -> None:
    # 3,000 exemplars share "common", 600 "usual": a query keeps "rare" and drops the others
    # (over the postings budget); "usual" alone is kept, "common" is a stop word of the store.
    items = [_ex(f"c{i:04d}", f"common filler{i}" + " usual" * (i < 600)) for i in range(3000)]
    items.append(_ex("r", "rare common usual"))
    with ExemplarStore(_store(tmp_path, items)) as store:
        hits = store.search("rare common usual words", 3)
        assert [h.exemplar.id for h in hits] == ["r"]
        assert len(store.search("usual", 3)) == 3
        assert store.search("common", 3) == []


def test_query_terms_are_fts_safe_and_drop_stop_words() -> None:
    assert query_terms("") == []
    assert query_terms("the is a of") == []
    terms = query_terms('"NEAR(" OR * AND col:x ^y -z')
    assert all(t.isalnum() and t.isascii() and t.islower() for t in terms)
    assert query_terms("Café") == query_terms("cafe") == ["acafe"]
    assert query_terms("😂") == ["uf09f9882"]


def test_search_ranks_by_bm25_and_breaks_ties_by_id(tmp_path: Path) -> None:
    items = [
        _ex("c", "dinner tonight at the thai place"),
        _ex("b", "dinner tonight?"),
        _ex("a", "dinner tonight?"),
        _ex("d", "rent is due"),
    ]
    with ExemplarStore(_store(tmp_path, items)) as store:
        hits = store.search("dinner tonight", 3)
        assert [h.exemplar.id for h in hits] == ["a", "b", "c"]
        assert hits[0].score == hits[1].score > hits[2].score > 0
        assert store.search("rent", 5)[0].exemplar.id == "d"
        assert store.search("nothing matches", 3) == []


@pytest.mark.parametrize(
    "query",
    ['"NEAR(" OR *', "NEAR(a b)", "a OR", "*", '"', "col:dinner", "^dinner", "dinner -rent",
     "AND", "\x00", "d" * 10_000, " ".join(f"w{i}" for i in range(5000)), "ﷺ\u200d\ufeff"],
)  # fmt: skip
def test_hostile_queries_are_neither_errors_nor_syntax(tmp_path: Path, query: str) -> None:
    items = [_ex("a", "near or and not"), _ex("b", "dinner tonight"), _ex("c", "col: d")]
    with ExemplarStore(_store(tmp_path, items)) as store:
        hits = store.search(query, 3)
    assert isinstance(hits, list)
    if query == '"NEAR(" OR *':
        assert [h.exemplar.id for h in hits] == ["a"]  # the word "near", not a NEAR query


def test_hostile_messages_are_stored_verbatim(tmp_path: Path) -> None:
    nasty = ["'); DROP TABLE exemplar; --", '"NEAR(" OR *', "😂" * 500, "\x00nul", "é" * 3]
    items = [_ex(str(i), m, m) for i, m in enumerate(nasty)]
    with ExemplarStore(_store(tmp_path, items)) as store:
        assert [e.message for e in store.exemplars()] == nasty
        assert store.search("drop table", 1)[0].exemplar.message == nasty[0]
        assert store.search("😂", 1)[0].exemplar.id == "2"


def test_exclusions_leave_out_thread_id_and_reply(tmp_path: Path) -> None:
    items = [
        _ex("a", "you coming tonight", "yea omw", "t1"),
        _ex("b", "you coming tonight", "in 10", "t2"),
        _ex("c", "coming tonight?", "yea omw", "t3"),
        _ex("d", "tonight", "cant", "t4"),
    ]
    with ExemplarStore(_store(tmp_path, items)) as store:
        ids = [h.exemplar.id for h in store.search("you coming tonight", 3)]
        assert ids == ["a", "b", "c"]
        left = store.search("you coming tonight", 3, exclude_id="a", exclude_reply="yea omw")
        assert [h.exemplar.id for h in left] == ["b", "d"]
        assert [h.exemplar.id for h in store.search("tonight", 4, exclude_thread="t2")] == [
            "d", "a", "c",  # "you" is a stop word: a and c tie, broken by id
        ]  # fmt: skip


def test_many_exclusions_past_the_first_fetch(tmp_path: Path) -> None:
    # 60 exemplars of one thread outrank the rest: the search must fetch past them.
    items = [_ex(f"own{i:02d}", "pizza pizza tonight", f"r{i}", "own") for i in range(60)]
    items += [_ex("other", "pizza later", "sure", "x")]
    with ExemplarStore(_store(tmp_path, items)) as store:
        hits = store.search("pizza tonight", 2, exclude_thread="own")
    assert [h.exemplar.id for h in hits] == ["other"]


def test_min_score_filters(tmp_path: Path) -> None:
    items = [_ex("a", "dinner tonight"), _ex("b", "tonight rent dinner movie gym")]
    with ExemplarStore(_store(tmp_path, items)) as store:
        best = store.search("dinner tonight", 2)
        high = store.search("dinner tonight", 2, min_score=(best[0].score + best[1].score) / 2)
    assert [h.exemplar.id for h in high] == ["a"]


def test_same_inputs_same_store_bytes_whatever_the_order(tmp_path: Path) -> None:
    items = [_ex(f"{i:03d}", f"message {i} about {i % 7}", f"reply {i}") for i in range(200)]
    a = _store(tmp_path, items, "a.sqlite")
    b = _store(tmp_path, list(reversed(items)), "b.sqlite")
    assert a.read_bytes() == b.read_bytes()
    with ExemplarStore(a) as sa, ExemplarStore(b) as sb:
        assert sa.fingerprint == sb.fingerprint
        assert sa.search("about 3", 5) == sb.search("about 3", 5)


def test_build_refuses_to_replace_what_is_not_a_store(tmp_path: Path) -> None:
    precious = tmp_path / "notes.sqlite"
    precious.write_text("my notes")
    with pytest.raises(OutputExistsError, match="already exists"):
        build_store(precious, [], contract="reply", key=KEY)
    with pytest.raises(OutputRefusedError, match="not a jarvis exemplar store"):
        build_store(precious, [], contract="reply", key=KEY, force=True)
    assert precious.read_text() == "my notes"
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(OutputRefusedError):
        build_store(other, [], contract="reply", key=KEY, force=True)
    path = _store(tmp_path, [_ex("a", "hi")])
    build_store(path, [_ex("b", "yo")], contract="reply", key=KEY, force=True)
    with ExemplarStore(path) as store:
        assert [e.id for e in store.exemplars()] == ["b"]
    assert not list(tmp_path.glob(".*partial"))


def test_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(StoreError, match="not a jarvis exemplar store"):
        ExemplarStore(junk)
    with pytest.raises(StoreError, match="no exemplar store"):
        ExemplarStore(tmp_path / "missing.sqlite")
    assert not is_store(junk)


def test_duplicate_ids_with_other_content_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="id 'a' is given twice"):
        build_store(tmp_path / "s", [_ex("a", "x"), _ex("a", "y")], contract="reply", key=KEY)


def test_add_grows_the_store_and_records_its_history(tmp_path: Path) -> None:
    path = _store(tmp_path, [_ex("a", "dinner tonight")])
    with ExemplarStore(path) as store:
        first = store.fingerprint
    added, present, fingerprint = add_to_store(
        path, [_ex("a", "dinner tonight"), _ex("b", "dinner later")], key=KEY
    )
    assert (added, present) == (1, 1)
    with ExemplarStore(path) as store:
        assert store.count == 2 and store.fingerprint == fingerprint != first
        assert store.history == [first]
        assert [h.exemplar.id for h in store.search("dinner", 2)] == ["a", "b"]
    # The set hash does not depend on how the store was grown.
    whole = _store(tmp_path, [_ex("b", "dinner later"), _ex("a", "dinner tonight")], "w.sqlite")
    with ExemplarStore(whole) as store:
        assert store.fingerprint == fingerprint
    with pytest.raises(InputError, match="already in the store with other content"):
        add_to_store(path, [_ex("b", "changed")], key=KEY)
    with pytest.raises(StoreError, match="another retrieval"):
        add_to_store(path, [_ex("c", "x")], key="0" * 64)
    with ExemplarStore(path) as store:
        assert store.count == 2  # the refused adds changed nothing


def _reader(path: str, seconds: float, out: multiprocessing.Queue[object]) -> None:
    seen = set()
    errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with ExemplarStore(path) as store:
                n = len(store.search("dinner", 500))
                seen.add((store.count, n))
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors += 1
            out.put(repr(exc))
    out.put(sorted(seen))
    out.put(errors)


def test_add_is_atomic_under_a_concurrent_reader(tmp_path: Path) -> None:
    path = _store(tmp_path, [_ex(f"a{i:03d}", "dinner tonight") for i in range(100)])
    queue: multiprocessing.Queue[object] = multiprocessing.get_context("spawn").Queue()
    reader = multiprocessing.get_context("spawn").Process(
        target=_reader, args=(str(path), 4.0, queue)
    )
    reader.start()
    time.sleep(1.0)
    for batch in range(4):
        items = [_ex(f"b{batch}{i:03d}", "dinner later") for i in range(100)]
        add_to_store(path, items, key=KEY)
    reader.join(30)
    seen, errors = queue.get(timeout=5), queue.get(timeout=5)
    assert errors == 0
    # Every state a reader saw is a whole add (each statement reads one committed state):
    # 100, 200, ... exemplars, never a part of an add.
    assert all(count % 100 == 0 and n % 100 == 0 for count, n in seen)  # type: ignore[attr-defined]
    assert len({n for _, n in seen}) >= 2  # type: ignore[attr-defined]


# --- the contract's retrieval ---------------------------------------------------------------


def test_query_is_the_last_message_not_from_the_persona() -> None:
    record = {
        "messages": [
            {"sender": "Sam", "text": "dinner?"},
            {"sender": "jwalin", "text": "sure"},
            {"sender": "Sam", "text": "7pm at thai place"},
            {"sender": "Jwalin", "text": "ok"},
        ],
        "reply": "see you",
        "thread": "t",
    }
    assert query_text(REPLY2, record) == "7pm at thai place"
    assert exemplar_of(REPLY2, "r1", record) == StoredExemplar(
        "r1", "t", "7pm at thai place", "see you"
    )
    only_own = {"messages": [{"sender": "Jwalin", "text": "hey"}], "reply": "x"}
    assert query_text(REPLY2, only_own) == ""
    assert exemplar_of(REPLY2, "r2", only_own) is None


def test_retrieve_leave_one_out(tmp_path: Path) -> None:
    harvest = read_exemplars(REPLY2, [str(EXAMPLES)])
    assert harvest.records == 127 and len(harvest.exemplars) == 127
    path = tmp_path / "h.sqlite"
    build_store(path, harvest.exemplars, contract="reply", key=KEY)
    records = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    with open_store(REPLY2, path) as store:
        for record in records:
            got = retrieve(REPLY2, store, record, leave_out=record["id"])
            assert len(got) <= 3
            assert all(g["reply"] != record["reply"] for g in got)
            thread = {e.id: e.thread for e in store.exemplars()}
            ids = [h.exemplar.id for h in store.search(query_text(REPLY2, record), 50)]
            if query_terms(query_text(REPLY2, record)):
                assert record["id"] in ids  # it would match itself without leave-one-out
            kept = [i for i in ids if thread[i] != record["thread"] and i != record["id"]]
            assert len(got) <= len(kept)


def test_open_store_refuses_another_contract(tmp_path: Path) -> None:
    path = _store(tmp_path, [_ex("a", "hi")])
    with pytest.raises(ContractMismatchError, match="declares no retrieval"):
        open_store(load_contract("reply@1"), path)
    other = tmp_path / "o.sqlite"
    build_store(other, [], contract="reply", key="1" * 64)
    with pytest.raises(ContractMismatchError, match="was built for reply"):
        open_store(REPLY2, other)


def test_retrieval_block_is_validated(tmp_path: Path) -> None:
    root = copy_root(tmp_path / "root")
    spec = root / "contracts" / "reply.yaml"
    text = spec.read_text()
    for bad, message in [
        ("retrieval: {k: 0}", "greater than or equal to 1"),
        ("retrieval: {field: reply}", "retrieval.field"),
        ("retrieval: {query: 'field:nope'}", "retrieval.query"),
        ("retrieval: {persona: nobody}", "retrieval.persona"),
        ("retrieval: {query: 'DROP TABLE'}", "retrieval.query"),
    ]:
        spec.write_text(text.replace("group_key: thread", f"group_key: thread\n    {bad}", 1))
        with pytest.raises(ContractError, match=message):
            load_contract("reply@1", root=root, enforce_lock=False)
