"""Retrieval end to end: render-dataset fills the RAG block from a train-only store, runtime
prompts retrieve with the same function byte for byte, adapters carry the store they were
trained with, and `jarvis index` builds, grows, shows and queries stores."""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jarvis import build_prompt, build_simple_reply_prompt, load_contract
from jarvis.cli import cli
from jarvis.dataset import Recipe, load_manifest, render_dataset
from jarvis.errors import ContractMismatchError, RecordError
from jarvis.rag.store import ExemplarStore, StoredExemplar, add_to_store
from jarvis.verify import verify_dataset

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "reply" / "threads.jsonl"
REPLY2 = load_contract("reply@2")


def _render(out: Path, inputs: list[str], **options: Any) -> dict[str, Any]:
    recipe = Recipe(contract="reply@2", inputs=inputs, **options)
    return render_dataset(recipe, out)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rag_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rag") / "data"
    _render(out, [str(EXAMPLES)], batch_size=2)
    return out


def test_store_holds_the_train_split_only(rag_dataset: Path) -> None:
    records = _lines(rag_dataset / "records.jsonl")
    train = {r["id"] for r in records if r["split"] == "train"}
    with ExemplarStore(rag_dataset / "exemplars.sqlite") as store:
        ids = {e.id for e in store.exemplars()}
        manifest = json.loads((rag_dataset / "manifest.json").read_text())
        assert manifest["retrieval"]["fingerprint"] == store.fingerprint
    assert ids == train  # every train record has a reply and an incoming message here
    assert manifest["retrieval"]["exemplars"] == len(train)
    shares = manifest["retrieval"]["splits"]
    assert 0 < shares["train"]["rows_with_exemplars"] <= 1
    assert shares["train"]["mean_exemplars"] <= 3


def test_training_rows_are_leave_one_out(rag_dataset: Path) -> None:
    records = _lines(rag_dataset / "records.jsonl")
    by_id = {r["id"]: r for r in records}
    with ExemplarStore(rag_dataset / "exemplars.sqlite") as store:
        owner = {(e.message, e.reply): e for e in store.exemplars()}
    filled = 0
    for item in records:
        record = item["record"]
        for exemplar in record.get("retrieved", []):
            filled += 1
            source = owner[(exemplar["message"], exemplar["reply"])]
            assert by_id[source.id]["split"] == "train"
            assert source.id != item["id"]
            assert source.thread != record.get("thread")
            if item["split"] == "train":
                assert exemplar["reply"] != record["reply"]
    assert filled > 50


def test_runtime_prompt_equals_every_test_and_valid_row(rag_dataset: Path) -> None:
    rows = {}
    for split in ("train", "valid", "test"):
        for row in _lines(rag_dataset / f"{split}.jsonl"):
            rows[row["id"]] = row["messages"]
    checked = 0
    store = rag_dataset / "exemplars.sqlite"
    with ExemplarStore(store) as opened:
        for item in _lines(rag_dataset / "records.jsonl"):
            if item["split"] == "train":
                continue
            record = item["record"]
            prompt = build_simple_reply_prompt(
                record["messages"], contract="reply@2", exemplars=opened, thread=record["thread"]
            )
            assert prompt.messages == rows[item["id"]][:-1]
            # The path form and build_prompt retrieve the same.
            again = build_prompt(
                {k: v for k, v in record.items() if k != "retrieved"},
                contract="reply@2",
                exemplars=store,
            )
            assert again.messages == prompt.messages
            checked += 1
    assert checked == 17


def test_output_is_byte_identical_whatever_the_input_order(
    rag_dataset: Path, tmp_path: Path
) -> None:
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines(keepends=True)
    random.Random(7).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(lines), encoding="utf-8")
    _render(tmp_path / "again", [str(shuffled)], batch_size=2)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "records.jsonl", "exemplars.sqlite"):
        assert (tmp_path / "again" / name).read_bytes() == (rag_dataset / name).read_bytes()


def test_records_carrying_retrieved_are_rejected(tmp_path: Path) -> None:
    raw = tmp_path / "in.jsonl"
    good = [json.loads(x) for x in EXAMPLES.read_text().splitlines()[:30]]
    bad = {**good[0], "id": "own-rag", "retrieved": [{"message": "a", "reply": "b"}]}
    raw.write_text("".join(json.dumps(r) + "\n" for r in [*good, bad]))
    manifest = _render(tmp_path / "out", [str(raw)], batch_size=1, max_reject_rate=0.5)
    assert manifest["rejects"] == 1
    reject = _lines(tmp_path / "out" / "rejects.jsonl")[0]
    assert reject["reason"].startswith("retrieved: reply@2 retrieves its exemplars itself")
    assert json.loads(reject["raw"]) == bad
    with pytest.raises(RecordError, match="must not carry 'retrieved'"):
        build_simple_reply_prompt([{"sender": "a", "text": "b"}], contract="reply@2", retrieved=[])


def test_verify_re_retrieves_and_fails_on_a_changed_store(
    rag_dataset: Path, tmp_path: Path
) -> None:
    result = verify_dataset(rag_dataset)
    assert result.ok, result.lines()
    [check] = [c for c in result.checks if c.name == "exemplars"]
    assert check.detail.startswith("127 records re-retrieve the same exemplars")
    copy = shutil.copytree(rag_dataset, tmp_path / "copy")
    add_to_store(
        copy / "exemplars.sqlite",
        [StoredExemplar("new", "x", "dinner tonight", "sure")],
        key=str(REPLY2.retrieval_key),
    )
    failed = {c.name: c for c in verify_dataset(copy).checks if not c.passed}
    assert "exemplars" in failed and "fingerprint" in failed["exemplars"].detail
    # The manifest edited to match the grown store: the foreign exemplar is still caught.
    from jarvis.files import sha256_file

    manifest = load_manifest(copy)
    with ExemplarStore(copy / "exemplars.sqlite") as store:
        manifest["retrieval"]["fingerprint"] = store.fingerprint
    manifest["files"]["exemplars.sqlite"]["sha256"] = sha256_file(copy / "exemplars.sqlite")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    failed = {c.name: c for c in verify_dataset(copy).checks if not c.passed}
    assert set(failed) == {"exemplars"}
    assert "the store holds 1 exemplars not from the train split (e.g. 'new')" in (
        failed["exemplars"].detail
    )


def test_diff_reports_exemplar_changes(rag_dataset: Path, tmp_path: Path) -> None:
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines(keepends=True)
    smaller = tmp_path / "smaller.jsonl"
    smaller.write_text("".join(lines[:100]), encoding="utf-8")
    _render(tmp_path / "small", [str(smaller)], batch_size=2)
    small = tmp_path / "small"
    result = CliRunner().invoke(cli, ["diff", str(rag_dataset), str(small)])
    assert result.exit_code == 1, result.output
    [line] = [x for x in result.stdout.splitlines() if x.startswith("# exemplars: ")]
    changed = int(line.split()[2])
    assert 0 < changed < 127
    assert line.endswith(f"{small}: {load_manifest(small)['retrieval']['exemplars']} exemplars "
                         f"({load_manifest(small)['retrieval']['fingerprint'][:12]})")  # fmt: skip
    assert "exemplars (" in result.stdout.splitlines()[-1]


# --- adapters and the engine -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rag_adapter(
    tiny_model: Path, rag_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from conftest import train_tiny

    return train_tiny(rag_dataset, tiny_model, tmp_path_factory.mktemp("rag-adapter") / "a", 2)


@pytest.mark.slow
def test_adapter_stamp_records_the_store(rag_adapter: Path, rag_dataset: Path) -> None:
    stamp = json.loads((rag_adapter / "adapter_config.json").read_text())["jarvis"]
    manifest = json.loads((rag_dataset / "manifest.json").read_text())
    assert stamp["retrieval"]["fingerprint"] == manifest["retrieval"]["fingerprint"]
    assert stamp["retrieval"]["exemplars"] == manifest["retrieval"]["exemplars"]


@pytest.mark.slow
def test_engine_refuses_to_serve_without_the_store(
    rag_adapter: Path, rag_dataset: Path, tmp_path: Path
) -> None:
    from jarvis.engine import ReplyEngine

    with pytest.raises(ContractMismatchError, match="served without one: pass --exemplars"):
        ReplyEngine(adapter=rag_adapter)
    store = rag_dataset / "exemplars.sqlite"
    engine = ReplyEngine(adapter=rag_adapter, exemplars=store)
    assert engine.store_note is None
    record = _lines(rag_dataset / "records.jsonl")[0]["record"]
    request = {k: v for k, v in record.items() if k not in ("retrieved", "reply")}
    expected = build_prompt(request, contract="reply@2", exemplars=store).messages
    assert engine.messages(request) == expected
    assert engine.reply(request, max_tokens=3, temperature=0.0).contract == "reply@2"
    grown = shutil.copy(store, tmp_path / "grown.sqlite")
    add_to_store(
        grown, [StoredExemplar("z", "z", "brand new", "ok")], key=str(REPLY2.retrieval_key)
    )
    engine = ReplyEngine(adapter=rag_adapter, exemplars=grown, prefix_cache=False)
    assert engine.store_note is not None and "grew since training" in engine.store_note
    # A store built from the whole history (not grown from the training one): reported too.
    whole = tmp_path / "history.sqlite"
    result = CliRunner().invoke(cli, ["index", "build", "--contract", "reply@2", "--input",
                                      str(EXAMPLES), "--out", str(whole)])  # fmt: skip
    assert result.exit_code == 0, result.output
    engine = ReplyEngine(adapter=rag_adapter, exemplars=whole, prefix_cache=False)
    assert engine.store_note is not None
    assert engine.store_note.startswith(f"exemplar store {whole} is not the one trained with")


@pytest.mark.slow
def test_an_adapter_trained_without_a_store_refuses_one(
    trained_adapter: Path, rag_dataset: Path
) -> None:
    from jarvis.engine import ReplyEngine

    result = CliRunner().invoke(
        cli,
        ["reply", "--adapter", str(trained_adapter), "--contract", "reply@2", "--allow-mismatch",
         "--exemplars", str(rag_dataset / "exemplars.sqlite"), "--max-tokens", "2", "hi"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with pytest.raises(ContractMismatchError, match="reply@1"):
        ReplyEngine(adapter=trained_adapter, exemplars=rag_dataset / "exemplars.sqlite")


@pytest.mark.slow
def test_cli_reply_without_the_store_is_exit_8(rag_adapter: Path) -> None:
    result = CliRunner().invoke(cli, ["reply", "--adapter", str(rag_adapter), "hi"])
    assert result.exit_code == 8
    assert result.stderr.startswith(
        f"error: adapter {rag_adapter} was trained with an exemplar store ("
    )


@pytest.mark.slow
def test_caller_rag_blocks_in_every_training_row_warn_when_a_prompt_lacks_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    from conftest import REPLY_RECORDS, train_tiny, write_dataset
    from jarvis.adapter import RagShapeWarning
    from jarvis.engine import ReplyEngine

    block = [{"message": "you up?", "reply": "ya"}]
    records = [{**r, "retrieved": block} for r in REPLY_RECORDS]
    data = write_dataset(tmp_path / "data", records)
    assert load_manifest(data)["rag"] == {
        "field": "retrieved", "rows_with_block": {"test": 1.0, "train": 1.0, "valid": 1.0},
    }  # fmt: skip
    adapter = train_tiny(data, tiny_model, tmp_path / "adapter", 2)
    engine = ReplyEngine(adapter=adapter, prefix_cache=False)
    with pytest.warns(RagShapeWarning, match="no RAG block .* 100% of the adapter's training"):
        engine.messages({"messages": [{"sender": "Sam", "text": "you up?"}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.messages({"messages": [{"sender": "Sam", "text": "hi"}], "retrieved": block})


@pytest.mark.slow
def test_caller_rag_block_where_training_had_none_warns(trained_adapter: Path) -> None:
    from jarvis.adapter import RagShapeWarning
    from jarvis.engine import ReplyEngine

    engine = ReplyEngine(adapter=trained_adapter, prefix_cache=False)
    request = {
        "messages": [{"sender": "Sam", "text": "you up?"}],
        "retrieved": [{"message": "you up", "reply": "ya"}],
    }
    with pytest.warns(RagShapeWarning, match="0% of the adapter's training rows had one"):
        engine.messages(request)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.messages({"messages": request["messages"]})  # the trained shape: no warning


# --- jarvis index ---------------------------------------------------------------------------


def test_index_build_add_show_query(tmp_path: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "history.sqlite"
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines(keepends=True)
    first, later = tmp_path / "first.jsonl", tmp_path / "later.jsonl"
    first.write_text("".join(lines[:100]))
    later.write_text("".join(lines[90:]))
    built = runner.invoke(
        cli, ["index", "build", "--contract", "reply@2", "--input", str(first), "--out", str(store)]
    )
    assert built.exit_code == 0, built.output
    assert built.stdout.startswith(f"wrote {store}: 100 exemplars from 100 records (0 without")
    again = runner.invoke(
        cli, ["index", "build", "--contract", "reply@2", "--input", str(first), "--out", str(store)]
    )
    assert again.exit_code == 12
    assert again.stderr == f"error: {store}: already exists (pass --force to replace it)\n"
    added = runner.invoke(cli, ["index", "add", str(store), "--contract", "reply@2",
                                "--input", str(later)])  # fmt: skip
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith(f"{store}: added 27 exemplars (10 already present")
    shown = runner.invoke(cli, ["index", "show", str(store), "--json"])
    info = json.loads(shown.stdout)
    assert info["exemplars"] == 127 and len(info["history"]) == 1
    whole = tmp_path / "whole.sqlite"
    runner.invoke(cli, ["index", "build", "--contract", "reply@2", "--input", str(EXAMPLES),
                        "--out", str(whole)])  # fmt: skip
    with ExemplarStore(whole) as a, ExemplarStore(store) as b:
        assert a.fingerprint == b.fingerprint  # grown or built at once: the same content
    found = runner.invoke(
        cli, ["index", "query", str(store), "--contract", "reply@2", "dinner tonight?", "--json"]
    )
    hits = json.loads(found.stdout)["exemplars"]
    assert 1 <= len(hits) <= 3 and all("dinner" in h["message"] or "tonight" in h["message"]
                                       for h in hits)  # fmt: skip
    nothing = runner.invoke(cli, ["index", "query", str(store), "--contract", "reply@2", "the"])
    assert nothing.stdout == "no exemplars (no term of the message matches, or only stop words)\n"


def test_index_errors_name_the_problem(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"sender": "a", "text": "b"}], "reply": "c"}\n{"messages": 5}\n')
    result = runner.invoke(cli, ["index", "build", "--contract", "reply@2", "--input", str(bad),
                                 "--out", str(tmp_path / "s.sqlite")])  # fmt: skip
    assert result.exit_code == 5
    assert result.stderr.startswith(f"error: {bad}:2: messages: ")
    assert not (tmp_path / "s.sqlite").exists()
    result = runner.invoke(cli, ["index", "build", "--contract", "reply@1", "--input", str(bad),
                                 "--out", str(tmp_path / "s.sqlite")])  # fmt: skip
    assert result.exit_code == 5
    assert "reply@1 declares no retrieval" in result.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not sqlite")
    result = runner.invoke(cli, ["index", "show", str(junk)])
    assert result.exit_code == 5
    assert result.stderr == f"error: {junk}: not a jarvis exemplar store\n"


@pytest.mark.slow
def test_eval_prompts_with_the_dataset_store(
    rag_adapter: Path, rag_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        cli, ["eval", "--dataset", str(rag_dataset), "--adapter", str(rag_adapter),
              "--out", str(out), "--max-tokens", "4", "--limit", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # The adapter refuses to serve without a store: eval passed the dataset's own.
    assert len(_lines(out / "replies.jsonl")) == 4


def test_tokens_are_counted_with_the_exemplars_in(rag_dataset: Path, tmp_path: Path) -> None:
    from jarvis.chat import load_tokenizer, mlx_row_tokens
    from jarvis.errors import TokenizationError
    from tokenizer_fixture import make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    manifest = _render(tmp_path / "out", [str(EXAMPLES)], batch_size=2, tokenizer=str(tok))
    tokenizer = load_tokenizer(str(tok))
    rows = _lines(tmp_path / "out" / "train.jsonl")
    longest = max(len(mlx_row_tokens(tokenizer, r)) for r in rows)
    assert manifest["splits"]["train"]["tokens"]["max"] == longest
    # The same rows as without a tokenizer: counting changes nothing.
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == (
        rag_dataset / "train.jsonl"
    ).read_bytes()
    with pytest.raises(TokenizationError, match="exemplars the row has .* --max-seq-length 60"):
        _render(tmp_path / "short", [str(EXAMPLES)], batch_size=2, tokenizer=str(tok),
                max_seq_length=60)  # fmt: skip


def _rendered(renderer: Any, records: list[dict[str, Any]]) -> list[tuple[Any, bytes]]:
    """(messages, row) per record, as pass 1 hands them to the token counter."""
    out = []
    for r in records:
        row, _, messages = renderer.render(renderer.contract.validate(r), r["id"])
        out.append((messages, row))
    return out


def test_batched_token_counts_equal_one_at_a_time(tmp_path: Path) -> None:
    from jarvis.contract import load_contract
    from jarvis.dataset import RowRenderer
    from tokenizer_fixture import make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    contract = load_contract("reply@1")
    renderer = RowRenderer(contract, Recipe(contract="reply@1", inputs=["x"], tokenizer=str(tok)))
    items = _rendered(renderer, _lines(EXAMPLES))
    batched = renderer.tokens_many(items)
    assert renderer.batched  # verified on the first batch, so it stayed batched
    assert batched == [renderer.tokens(m, row) for m, row in items]


def test_batched_tokens_fall_back_on_any_difference(tmp_path: Path) -> None:
    from jarvis.contract import load_contract
    from jarvis.dataset import RowRenderer
    from tokenizer_fixture import make_tokenizer

    class Skewed:
        """A fast tokenizer whose batch call disagrees with the one-row path (one id off)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[Any]:
            out = self.inner.encode_batch(texts, add_special_tokens=add_special_tokens)
            return [type("E", (), {"ids": [*e.ids, 0]})() for e in out]

    tok = make_tokenizer(tmp_path / "tok")
    contract = load_contract("reply@1")
    for skewed in ("pieces", "ascii words", "whole texts"):
        recipe = Recipe(contract="reply@1", inputs=["x"], tokenizer=str(tok))
        renderer = RowRenderer(contract, recipe)
        segments = renderer.segments
        assert segments is not None  # the ChatML tokenizer splits at its tokens
        assert segments.words is not None  # and its ASCII pieces go word by word
        if skewed == "pieces":
            segments.words, segments.batch = None, Skewed(renderer.fast).encode_batch
        elif skewed == "ascii words":
            exact = segments.words.encode
            segments.words.encode = lambda text, exact=exact: [*exact(text), 0]  # type: ignore[method-assign]
        else:
            renderer.segments, renderer.fast = None, Skewed(renderer.fast)
        items = _rendered(renderer, _lines(EXAMPLES)[:40])
        assert renderer.tokens_many(items) == [renderer.tokens(m, row) for m, row in items]
        assert not renderer.batched  # and it stays on the exact path
