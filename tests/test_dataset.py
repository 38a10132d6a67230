"""render_dataset: splits, composition, checks, tokens, safe writes, manifest."""

from __future__ import annotations

import base64
import gzip
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_fixture import OUT_FILES, code, read_rows, recipe, reply, write_jsonl
from jarvis.contract import load_contract
from jarvis.dataset import Recipe, format_summary, load_manifest, render_dataset
from jarvis.errors import (
    DatasetError,
    InputError,
    OutputExistsError,
    TokenizationError,
    UsageError,
)
from tokenizer_fixture import CHATML, make_tokenizer


@pytest.fixture
def codegen_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """200 plain code records (a JSON array) and 20 perfect ones listed last, as in the seed."""
    plain = tmp_path / "alpaca.json"
    plain.write_text(json.dumps([code(i) for i in range(200)], indent=2))
    perfect = write_jsonl(tmp_path / "perfect.jsonl", [code(i, True) for i in range(20)])
    return plain, perfect


def test_perfect_share_of_train_matches_overall_share(
    tmp_path: Path, codegen_inputs: tuple[Path, Path]
) -> None:
    plain, perfect = codegen_inputs
    r = recipe(plain, f"perfect={perfect}", contract="codegen@1")
    manifest = render_dataset(r, tmp_path / "out")
    train = manifest["splits"]["train"]
    perfect_rows = train["tags"]["perfect"]["rows"]
    assert abs(perfect_rows - train["rows"] * 20 / 220) <= 1
    assert perfect_rows == 18
    assert train["compliance"]["per_tag"] == {"default": 0.0, "perfect": 1.0}
    assert train["compliance"]["overall"] == pytest.approx(18 / train["rows"], abs=1e-6)
    assert set(train["compliance"]["per_check"]) == {
        "sections",
        "python_parses",
        "docstring_sections",
    }
    rows = read_rows(tmp_path / "out" / "train.jsonl")
    assert len(rows) == train["rows"]
    assert all(set(row) == {"messages", "id"} for row in rows)
    summary = format_summary(manifest)
    assert "perfect" in summary and "train share" in summary


def test_train_only_puts_the_whole_tag_in_train(
    tmp_path: Path, codegen_inputs: tuple[Path, Path]
) -> None:
    plain, perfect = codegen_inputs
    r = recipe(plain, f"perfect={perfect}", contract="codegen@1", train_only=["perfect"])
    manifest = render_dataset(r, tmp_path / "out")
    assert manifest["splits"]["train"]["tags"]["perfect"]["rows"] == 20
    assert manifest["splits"]["valid"]["tags"]["perfect"]["rows"] == 0
    assert manifest["splits"]["test"]["tags"]["perfect"]["rows"] == 0


def test_repeat_multiplies_train_rows_only(
    tmp_path: Path, codegen_inputs: tuple[Path, Path]
) -> None:
    plain, perfect = codegen_inputs
    r = recipe(plain, f"perfect={perfect}", contract="codegen@1", repeat={"perfect": 5})
    manifest = render_dataset(r, tmp_path / "out")
    splits = manifest["splits"]
    assert splits["train"]["tags"]["perfect"] == {"rows": 90, "records": 18, "share": 0.333333}
    assert splits["train"]["repeats"] == {"perfect": 5}
    assert splits["valid"]["tags"]["perfect"]["rows"] == 1
    rows = read_rows(tmp_path / "out" / "train.jsonl")
    ids = [row["id"] for row in rows]
    assert len(rows) == 180 + 90 and len(set(ids)) == 180 + 18
    # Copies are spread by the shuffle, not stacked: mlx-lm batches consecutive rows.
    first = next(
        i for i, row in enumerate(rows) if "### Solution" in row["messages"][-1]["content"]
    )
    assert first < 60
    records = read_rows(tmp_path / "out" / "records.jsonl")
    assert len(records) == 220 and manifest["files"]["records.jsonl"]["rows"] == 220


def test_min_ratio_fails_with_the_numbers(
    tmp_path: Path, codegen_inputs: tuple[Path, Path]
) -> None:
    plain, perfect = codegen_inputs
    r = recipe(plain, f"perfect={perfect}", contract="codegen@1", min_ratio={"perfect": 0.2})
    with pytest.raises(DatasetError) as err:
        render_dataset(r, tmp_path / "out")
    assert str(err.value) == (
        "tag 'perfect' is 9.09% of train (18 of 198 rows), below --min-ratio perfect=0.2; "
        "add perfect records, or try --repeat perfect=3"
    )
    assert not (tmp_path / "out").exists()
    ok = recipe(
        plain,
        f"perfect={perfect}",
        contract="codegen@1",
        min_ratio={"perfect": 0.2},
        repeat={"perfect": 3},
    )
    assert render_dataset(ok, tmp_path / "out")["splits"]["train"]["tags"]["perfect"]["share"] > 0.2


def test_min_ratio_without_a_usable_repeat_says_so(
    tmp_path: Path, codegen_inputs: tuple[Path, Path]
) -> None:
    # Regression: --min-ratio TAG=1 divided by zero (a traceback, exit 1) computing the hint.
    plain, perfect = codegen_inputs
    r = recipe(plain, f"perfect={perfect}", contract="codegen@1", min_ratio={"perfect": 1.0})
    with pytest.raises(DatasetError) as err:
        render_dataset(r, tmp_path / "out")
    assert str(err.value) == (
        "tag 'perfect' is 9.09% of train (18 of 198 rows), below --min-ratio perfect=1; "
        "no --repeat reaches a share of 1 while other tags have 180 train rows"
    )
    assert not (tmp_path / "out").exists()


def test_min_compliant_fails_below_the_share(
    tmp_path: Path, codegen_inputs: tuple[Path, Path]
) -> None:
    plain, perfect = codegen_inputs
    r = recipe(plain, f"perfect={perfect}", contract="codegen@1", min_compliant=0.5)
    with pytest.raises(
        DatasetError,
        match=r"^9\.09% of training targets pass every output check "
        r"of codegen@1 \(18 of 198 rows\), below --min-compliant 0\.5; per check: "
        r"sections 9\.1%, python_parses 9\.1%, docstring_sections 9\.1%$",
    ):
        render_dataset(r, tmp_path / "out")


def test_shuffled_input_gives_byte_identical_output(tmp_path: Path) -> None:
    records = [reply(i, thread=f"t{i % 13}") for i in range(150)]
    a = write_jsonl(tmp_path / "a.jsonl", records)
    shuffled = records[:]
    random.Random(4).shuffle(shuffled)
    b = write_jsonl(tmp_path / "b.jsonl", shuffled)
    render_dataset(recipe(a), tmp_path / "out-a")
    render_dataset(recipe(b), tmp_path / "out-b")
    for name in OUT_FILES:
        assert (tmp_path / "out-a" / name).read_bytes() == (tmp_path / "out-b" / name).read_bytes()


def test_two_runs_are_byte_identical(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i, thread=f"t{i % 9}") for i in range(120)])
    render_dataset(recipe(a), tmp_path / "one")
    render_dataset(recipe(a), tmp_path / "two")
    for name in (*OUT_FILES, "manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    different = render_dataset(recipe(a, seed=1), tmp_path / "three")
    assert (tmp_path / "three" / "train.jsonl").read_bytes() != (
        tmp_path / "one" / "train.jsonl"
    ).read_bytes()
    assert different["recipe"]["seed"] == 1


def test_threads_stay_in_one_split_and_duplicates_are_dropped(tmp_path: Path) -> None:
    records = [reply(i, thread=f"t{i % 20}") for i in range(200)]
    a = write_jsonl(tmp_path / "a.jsonl", records + records[:7])
    manifest = render_dataset(recipe(a), tmp_path / "out")
    assert manifest["duplicates"] == 7
    assert manifest["inputs"][0]["duplicates"] == 7
    split_of: dict[str, set[str]] = {}
    for line in read_rows(tmp_path / "out" / "records.jsonl"):
        split_of.setdefault(line["record"]["thread"], set()).add(line["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {s for v in split_of.values() for s in v} == {"train", "valid", "test"}


def test_generated_ids_are_content_hashes_and_rows_carry_them(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)] + [reply(999, id="mine")])
    render_dataset(recipe(a), tmp_path / "out")
    records = {r["id"]: r for r in read_rows(tmp_path / "out" / "records.jsonl")}
    assert "mine" in records and records["mine"]["record"]["id"] == "mine"
    assert all(len(i) == 16 for i in records if i != "mine")
    rows = [
        r for s in ("train", "valid", "test") for r in read_rows(tmp_path / "out" / f"{s}.jsonl")
    ]
    assert {r["id"] for r in rows} == set(records)


def test_gzip_bom_crlf_and_json_array_inputs_match_plain_jsonl(tmp_path: Path) -> None:
    records = [reply(i) for i in range(60)]
    plain = write_jsonl(tmp_path / "plain.jsonl", records)
    folder = tmp_path / "mixed"
    folder.mkdir()
    body = "".join(json.dumps(r) + "\r\n" for r in records[:30]).encode()
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + body))
    (folder / "b.json").write_text(json.dumps(records[30:], indent=4))
    render_dataset(recipe(plain, split="0.8,0.1,0.1"), tmp_path / "out-plain")
    manifest = render_dataset(recipe(folder, split="0.8,0.1,0.1"), tmp_path / "out-mixed")
    assert [i["records"] for i in manifest["inputs"]] == [30, 30]
    for name in OUT_FILES:
        assert (tmp_path / "out-plain" / name).read_bytes() == (
            tmp_path / "out-mixed" / name
        ).read_bytes()


def test_rejects_are_written_verbatim_under_the_reject_rate(tmp_path: Path) -> None:
    good = [json.dumps(reply(i)) for i in range(60)]
    bad_schema = '{"messages": [{"sender": 5, "text": "hi"}], "reply": "yo"}'
    lines = good[:10] + [bad_schema] + good[10:] + ["{not json", '{"messages": []}']
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        render_dataset(recipe(path), tmp_path / "out")
    first = str(err.value).splitlines()
    assert first[0] == f"{path}:11: messages[0].sender: Input should be a valid string"
    assert first[-2] == "  3 of 63 records rejected (4.76%), above --max-reject-rate 0"
    kept = tmp_path / "out.rejects.jsonl"
    assert first[-1] == f"  the rejected records are in {kept}"
    assert not (tmp_path / "out").exists()
    # The failed run keeps its rejects readable beside the (untouched) output.
    assert [r["line"] for r in read_rows(kept)] == [11, 62, 63]
    manifest = render_dataset(
        recipe(path, max_reject_rate=0.05, split="0.8,0.1,0.1"), tmp_path / "out"
    )
    assert manifest["rejects"] == 3
    rejects = read_rows(tmp_path / "out" / "rejects.jsonl")
    assert [(r["line"], r["raw"]) for r in rejects] == [
        (11, bad_schema),
        (62, "{not json"),
        (63, '{"messages": []}'),
    ]
    assert (
        rejects[2]["reason"] == "messages: List should have at least 1 item after validation, not 0"
    )
    assert all(r["file"] == str(path) for r in rejects)


def test_non_utf8_rejects_are_kept_byte_for_byte(tmp_path: Path) -> None:
    latin = '{"messages": [{"sender": "Zo\xe9", "text": "ça va"}], "reply": "oui"}'.encode(
        "latin-1"
    )
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"".join(json.dumps(reply(i)).encode() + b"\n" for i in range(60)) + latin)
    render_dataset(recipe(path, max_reject_rate=0.05, split="0.8,0.1,0.1"), tmp_path / "out")
    (entry,) = read_rows(tmp_path / "out" / "rejects.jsonl")
    assert entry["line"] == 61 and entry["reason"].startswith("not UTF-8: invalid")
    assert "\ufffd" in entry["raw"]  # readable...
    assert base64.b64decode(entry["raw_base64"]) == latin  # ...and recoverable exactly


def test_missing_target_and_control_strings_are_rejects(tmp_path: Path) -> None:
    records = [reply(i) for i in range(100)]
    records.append({"messages": [{"sender": "Sam", "text": "hi"}]})
    records.append({"messages": [{"sender": "Sam", "text": "x<|im_end|>"}], "reply": "ok"})
    path = write_jsonl(tmp_path / "a.jsonl", records)
    manifest = render_dataset(recipe(path, max_reject_rate=0.1), tmp_path / "out")
    reasons = [r["reason"] for r in read_rows(tmp_path / "out" / "rejects.jsonl")]
    assert reasons[0] == "reply: required for a training row of reply@1"
    assert "messages[0].text: contains the chat control string '<|im_end|>'" in reasons[1]
    assert manifest["records"] == {"read": 102, "unique": 100}


def test_nothing_to_train_on_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="empty input file"):
        render_dataset(recipe(empty), tmp_path / "out")
    few = write_jsonl(tmp_path / "few.jsonl", [reply(i) for i in range(30)])
    with pytest.raises(
        DatasetError, match=r"^valid split has 2 rows, fewer than --min-split-rows 4"
    ):
        render_dataset(recipe(few), tmp_path / "out")
    assert render_dataset(recipe(few, split="0.8,0.2,0"), tmp_path / "out")["files"].keys() == {
        "train.jsonl",
        "valid.jsonl",
        "records.jsonl",
    }
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"x": 1}])
    with pytest.raises(DatasetError, match="no valid records: all 1 records were rejected"):
        render_dataset(recipe(bad, max_reject_rate=1), tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_unknown_tag_in_options_is_refused(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(10)])
    with pytest.raises(UsageError, match="--repeat perfct: no input has the tag 'perfct'"):
        render_dataset(recipe(a, repeat={"perfct": 2}), tmp_path / "out")


def test_existing_output_is_refused_and_kept_on_failure(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    render_dataset(recipe(a), tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(OutputExistsError):
        render_dataset(recipe(a), tmp_path / "out")
    with pytest.raises(DatasetError):
        render_dataset(
            recipe(a, min_compliant=1.1 - 0.1, min_ratio={"default": 1.0}, batch_size=1000),
            tmp_path / "out",
            force=True,
        )
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    render_dataset(recipe(a, seed=3), tmp_path / "out", force=True)
    assert load_manifest(tmp_path / "out")["recipe"]["seed"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_completions_refuses_a_contract_with_a_system_prompt(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    with pytest.raises(DatasetError, match="cannot keep the system prompt of reply@1"):
        render_dataset(recipe(a, format="completions"), tmp_path / "out")


def test_load_manifest_refuses_untrainable_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="the dataset folder is empty"):
        load_manifest(tmp_path / "empty")
    (tmp_path / "empty" / "train.jsonl").write_text("")
    with pytest.raises(DatasetError, match="no manifest.json"):
        load_manifest(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text("{")
    with pytest.raises(DatasetError, match="malformed manifest"):
        load_manifest(tmp_path / "empty")
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    render_dataset(recipe(a), tmp_path / "out")
    assert load_manifest(tmp_path / "out")["contract"]["ref"] == "reply@1"
    (tmp_path / "out" / "train.jsonl").write_text("")
    with pytest.raises(DatasetError, match=r"train.jsonl: empty; nothing to train on"):
        load_manifest(tmp_path / "out")


def test_recipe_yaml_round_trip(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    (tmp_path / "r.yaml").write_text(
        "contract: reply@1\ninputs: [a.jsonl]\nsplit: 0.8,0.1,0.1\nseed: 7\n"
    )
    r = Recipe.from_yaml(tmp_path / "r.yaml")
    assert r.inputs == [str(a)] and r.split == (0.8, 0.1, 0.1)
    manifest = render_dataset(r, tmp_path / "out")
    rebuilt = Recipe.build(**manifest["recipe"])
    assert rebuilt.model_copy(update={"root": None}) == r
    assert rebuilt.root == manifest["contract"]["root"]
    (tmp_path / "bad.yaml").write_text("contract: reply@1\ninputs: [a.jsonl]\nspilt: 1\n")
    with pytest.raises(UsageError, match="recipe: spilt: Extra inputs are not permitted"):
        Recipe.from_yaml(tmp_path / "bad.yaml")


# --- tokens ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_token_stats_and_overlength(tmp_path: Path, tokenizer_dir: Path) -> None:
    records = [reply(i) for i in range(99)] + [
        reply(5000, messages=[{"sender": "Sam", "text": "a very long message " * 40}])
    ]
    a = write_jsonl(tmp_path / "a.jsonl", records)
    manifest = render_dataset(recipe(a, tokenizer=str(tokenizer_dir)), tmp_path / "out")
    stats = manifest["splits"]["train"]["tokens"]
    assert 0 < stats["min"] <= stats["p95"] <= stats["max"]
    limit = 200
    assert max(s["tokens"]["max"] for s in manifest["splits"].values()) > limit
    with pytest.raises(
        TokenizationError,
        match=rf"^{a}:100: row has \d+ tokens, more than "
        rf"--max-seq-length {limit}; mlx-lm would silently cut",
    ):
        render_dataset(
            recipe(a, tokenizer=str(tokenizer_dir), max_seq_length=limit), tmp_path / "out2"
        )
    dropped = render_dataset(
        recipe(a, tokenizer=str(tokenizer_dir), max_seq_length=limit, on_overlength="drop"),
        tmp_path / "out2",
    )
    assert dropped["rejects"] == 1 and dropped["rejects_overlength"] == 1
    (reject,) = read_rows(tmp_path / "out2" / "rejects.jsonl")
    assert reject["line"] == 100 and reject["tokens"] > limit
    assert reject["reason"] == f"{reject['tokens']} tokens > --max-seq-length {limit}"


def test_tokens_counted_batch_by_batch_match_one_batch(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task's records are counted a batch at a time (`scan._COUNT_BATCH`, to bound the
    # memory a batch of encodings takes): every count lands on its own record.
    from jarvis.dataset import scan

    records = [reply(i) for i in range(100)]
    records[45]["reply"] = "word " * 400  # over the limit, in the seventh batch of 7
    a = write_jsonl(tmp_path / "a.jsonl", records)
    settings = {"tokenizer": str(tokenizer_dir), "max_seq_length": 300, "on_overlength": "drop"}
    render_dataset(recipe(a, **settings), tmp_path / "whole")
    monkeypatch.setattr(scan, "_COUNT_BATCH", 7)
    manifest = render_dataset(recipe(a, **settings), tmp_path / "batched")
    whole = {p.name: p.read_bytes() for p in (tmp_path / "whole").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "batched").iterdir()} == whole
    assert manifest["rejects_overlength"] == 1
    (reject,) = read_rows(tmp_path / "batched" / "rejects.jsonl")
    assert reject["line"] == 46


def test_prompt_that_is_not_a_token_prefix_fails(tmp_path: Path) -> None:
    # A template whose generation prompt opens a think block the rendered row does not have.
    template = CHATML.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\nok'")
    tok = make_tokenizer(tmp_path / "tok", template=template)
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    with pytest.raises(
        TokenizationError,
        match="is not a token prefix of the training row; first difference at token",
    ):
        render_dataset(recipe(a, tokenizer=str(tok)), tmp_path / "out")


def test_text_format_has_one_bos(tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path / "tok", bos="<s>", template="{{ bos_token }}" + CHATML)
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    render_dataset(recipe(a, format="text", tokenizer=str(tok)), tmp_path / "out")
    rows = read_rows(tmp_path / "out" / "train.jsonl")
    assert all(set(r) == {"text", "id"} for r in rows)
    assert rows[0]["text"].startswith("<|im_start|>system\nYou are Jwalin.")
    with pytest.raises(UsageError, match="--format text renders through a chat template"):
        render_dataset(recipe(a, format="text"), tmp_path / "out2")


def test_manifest_recipe_rebuilds_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the manifest kept input paths relative to the working folder of the run,
    # so `Recipe.build(**manifest["recipe"])` failed ("no such file") anywhere else.
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "a.jsonl", [reply(i) for i in range(60)])
    write_jsonl(tmp_path / "data" / "p.jsonl", [reply(i, tags=["perfect"]) for i in range(20)])
    (tmp_path / "data" / "r.yaml").write_text(
        "contract: reply@1\ninputs: [a.jsonl, perfect=p.jsonl]\nsplit: 0.8,0.1,0.1\n"
    )
    monkeypatch.chdir(tmp_path)
    manifest = render_dataset(Recipe.from_yaml("data/r.yaml"), Path("out"))
    assert manifest["recipe"]["inputs"] == [
        str(tmp_path / "data" / "a.jsonl"),
        f"perfect={tmp_path / 'data' / 'p.jsonl'}",
    ]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = render_dataset(Recipe.build(**manifest["recipe"]), Path("out"))
    assert again["files"] == manifest["files"]


def test_text_format_keeps_a_bos_string_the_tokenizer_never_adds(tmp_path: Path) -> None:
    # SmolLM2 declares bos_token <|im_start|> but adds no BOS when encoding: stripping the
    # template's leading "<|im_start|>" would cut the first turn's header from every row.
    tok = make_tokenizer(tmp_path / "tok")
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config.update(bos_token="<|im_start|>", add_bos_token=False)
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    render_dataset(recipe(a, format="text", tokenizer=str(tok)), tmp_path / "out")
    rows = read_rows(tmp_path / "out" / "train.jsonl")
    assert all(r["text"].startswith("<|im_start|>system\nYou are Jwalin.") for r in rows)


def test_duplicate_across_tags_keeps_one_tag_whatever_the_input_order(tmp_path: Path) -> None:
    shared = [reply(i) for i in range(10)]
    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(10, 90)] + shared)
    p = write_jsonl(tmp_path / "p.jsonl", shared + [reply(i) for i in range(90, 100)])
    first = render_dataset(recipe(a, f"perfect={p}"), tmp_path / "one")
    second = render_dataset(recipe(f"perfect={p}", a), tmp_path / "two")
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "records.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert first["duplicates"] == second["duplicates"] == 10
    lines = (tmp_path / "one" / "records.jsonl").read_text().splitlines()
    tags = {json.loads(line)["tag"] for line in lines}
    assert tags == {"default", "perfect"}
    perfect = sum(s["tags"].get("perfect", {}).get("rows", 0) for s in first["splits"].values())
    assert perfect == 20  # the shared records kept the more specific tag


def test_summary_warns_when_a_tag_has_no_training_rows() -> None:
    manifest = {
        "contract": {"ref": "reply@1", "fingerprint": "f" * 64},
        "format": "chat",
        "splits": {
            "train": {
                "rows": 8,
                "tags": {
                    "default": {"rows": 8, "share": 1.0},
                    "perfect": {"rows": 0, "share": 0.0},
                },
            },
            "valid": {"rows": 4, "tags": {"default": {"rows": 4, "share": 1.0}}},
        },
        "duplicates": 0,
        "rejects": 3,
    }
    summary = format_summary(manifest)
    assert summary.splitlines()[-1] == "warning: tag 'perfect' has no training rows"
    assert "rejects: 3 (see rejects.jsonl)" in summary


@pytest.mark.parametrize("jobs", [1, 2])
def test_rows_with_a_rag_block_are_counted_per_split_as_records_jsonl_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 4096)  # a worker with --jobs 2
    block = [{"message": "you up?", "reply": "ya"}]
    looks_like_one = 'she wrote "retrieved":[{ in a text'  # quoted inside a string: no block
    records = []
    for i in range(1200):
        extra = [{"retrieved": block}, {"retrieved": []}, {"retrieved": None}, {}][i % 4]
        records.append(reply(i, **extra))
        if i % 7 == 0:
            records.append(reply(i, **extra))  # a duplicate: one row, counted once
    records += [reply(5000 + i) | {"reply": looks_like_one} for i in range(60)]
    records.append({"messages": [], "retrieved": block})  # rejected: not counted
    src = write_jsonl(tmp_path / "in.jsonl", records)
    manifest = render_dataset(recipe(src, max_reject_rate=0.01), tmp_path / "out", jobs=jobs)
    entries = read_rows(tmp_path / "out" / "records.jsonl")
    want = {}
    for split in ("train", "valid", "test"):
        mine = [e for e in entries if e["split"] == split]
        want[split] = round(sum(bool(e["record"].get("retrieved")) for e in mine) / len(mine), 6)
    assert manifest["rag"] == {"field": "retrieved", "rows_with_block": want}
    assert 0.2 < want["train"] < 0.3


def test_read_records_names_a_bad_line(tmp_path: Path) -> None:
    from jarvis.dataset import read_records

    a = write_jsonl(tmp_path / "a.jsonl", [reply(i) for i in range(100)])
    render_dataset(recipe(a), tmp_path / "out")
    entries = read_records(tmp_path / "out")
    assert len(entries) == 100 and {e["split"] for e in entries} == {"train", "valid", "test"}
    with (tmp_path / "out" / "records.jsonl").open("a") as fh:
        fh.write('{"id": "x"}\n')
    with pytest.raises(InputError, match=r"records\.jsonl:101: not a records\.jsonl entry$"):
        read_records(tmp_path / "out")
    with pytest.raises(InputError, match="records.jsonl: missing; re-render"):
        read_records(tmp_path)


def test_a_records_own_tag_counts_for_ratios_and_low_compliance_is_a_warning(
    tmp_path: Path,
) -> None:
    from jarvis.dataset import composition_warnings

    target = (
        '### Solution\n```python\ndef f(x):\n    """Args: x. Returns: x."""\n    return x\n```\n'
        "### Usage\n```python\nf(1)\n```\n### Sanity test\n```python\nassert f(1) == 1\n```"
    )
    rows = [{"instruction": f"Task {i}.", "output": f"answer {i}"} for i in range(200)]
    rows += [
        {"instruction": f"Perfect {i}.", "output": target, "tags": ["perfect"]} for i in range(10)
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    base = Recipe(contract="codegen@1", inputs=[str(path)])
    manifest = render_dataset(base, tmp_path / "out")
    train = manifest["splits"]["train"]
    assert set(train["tags"]) == {"default", "perfect"}
    assert train["compliance"]["per_tag"]["perfect"] == 1.0
    (warning,) = composition_warnings(manifest)
    assert warning.startswith("warning: only 4.3% of training targets pass every output check")
    assert "codegen@1 (8 of 188 rows): the adapter will mostly learn other formats" in warning
    assert warning.endswith("try --repeat perfect=23 and gate the run with --min-compliant 0.5")
    # --min-ratio and --repeat see the record's own tag.
    with pytest.raises(DatasetError, match="tag 'perfect' is 4.26% of train"):
        render_dataset(base.model_copy(update={"min_ratio": {"perfect": 0.3}}), tmp_path / "o2")
    # The suggested repeat is enough: no warning, and --min-compliant 0.5 passes.
    fixed = base.model_copy(update={"repeat": {"perfect": 23}, "min_compliant": 0.5})
    assert composition_warnings(render_dataset(fixed, tmp_path / "o3")) == []
    # Input order never matters, own tags included.
    render_dataset(
        base.model_copy(update={"inputs": [str(write_jsonl(tmp_path / "r.jsonl", rows[::-1]))]}),
        tmp_path / "o4",
    )
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "o4" / name).read_bytes()


def _messy_jsonl(n: int) -> bytes:
    """JSONL as users have it: a BOM, CRLF ends, blank lines, bad lines, reused ids, non-UTF-8."""
    lines = [b"\xef\xbb\xbf" + json.dumps(reply(0, thread="t0")).encode() + b"\n"]
    for i in range(1, n):
        record = reply(i, thread=f"t{i // 4}", id=f"id-{i % 1700}")
        line = json.dumps(record, ensure_ascii=i % 2 == 0).encode()
        if i % 97 == 0:
            line = line[:-4]  # cut short: invalid JSON
        elif i % 89 == 0:
            line = b'{"messages": [], "reply": "x"}'
        elif i % 83 == 0:
            line = b'{"messages": [{"sender": "S", "text": "caf\xe9"}], "reply": "x"}'
        lines.append(line + (b"\r\n" if i % 3 == 0 else b"\n") + (b"\n" if i % 50 == 0 else b""))
    return b"".join(lines)


def test_byte_ranges_read_as_the_line_reader_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tasks of 4 KB: hundreds of range boundaries. The same bytes gzipped take the reader
    # that yields records one by one; both must give the same rows, rejects and line numbers.
    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 4096)
    data = _messy_jsonl(2000)
    plain = tmp_path / "in.jsonl"
    plain.write_bytes(data)
    packed = tmp_path / "zipped" / "in.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(data))
    outs = {}
    for name, src, jobs in (("plain", plain, 1), ("plain2", plain, 2), ("gz", packed, 1)):
        manifest = render_dataset(recipe(src, max_reject_rate=0.5), tmp_path / name, jobs=jobs)
        outs[name] = {f: (tmp_path / name / f).read_bytes() for f in (*OUT_FILES, "rejects.jsonl")}
        assert manifest["rejects"] > 0 and manifest["records"]["unique"] > 1000
    assert outs["plain"] == outs["plain2"]
    shown = str(plain).encode(), str(packed).encode()
    assert outs["plain"]["rejects.jsonl"] == outs["gz"]["rejects.jsonl"].replace(shown[1], shown[0])
    assert {k: v for k, v in outs["plain"].items() if k != "rejects.jsonl"} == {
        k: v for k, v in outs["gz"].items() if k != "rejects.jsonl"
    }
    rejects = [json.loads(line) for line in outs["plain"]["rejects.jsonl"].splitlines()]
    reasons = {r["reason"].split(":")[0] for r in rejects}
    assert {"invalid JSON", "messages", "not UTF-8", "id"} <= reasons
    used = next(r for r in rejects if r["reason"].startswith("id:"))
    assert json.loads(used["raw"])["id"] in used["reason"]  # the verbatim line, re-read


def test_seen_set_agrees_with_a_python_set() -> None:
    from array import array

    from jarvis.dataset.dedup import SeenSet

    rng = random.Random(3)
    seen, model, members = SeenSet(), set(), [1]
    for _ in range(40):  # tasks: check a batch, add what is new, settle
        batch = [rng.getrandbits(64) if rng.random() < 0.7 else rng.choice(members)
                 for _ in range(rng.randint(1, 9000))]  # fmt: skip
        hits = seen.contains_many(array("Q", batch)).tolist()
        for value, hit in zip(batch, hits, strict=True):
            assert (hit or seen.pending_has(value)) == (value in model)
            if value not in model:
                seen.add(value)
                model.add(value)
                members.append(value)
        seen.settle()
    assert len(seen.sorted) > 0 and len(seen) == len(model)
    assert all(v in seen for v in rng.sample(sorted(model), 50)) and 5 not in seen


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(st.sampled_from(range(40)), max_size=30), min_size=1, max_size=12),
    pending=st.sampled_from([1, 3, 1 << 16]),
)
def test_group_ids_number_groups_as_a_dict_would(batches: list[list[int]], pending: int) -> None:
    # Identities that differ only in trailing NUL bytes, which numpy drops from an S16
    # value given as bytes, must stay apart; merges into the sorted array (`pending`: the
    # least merged at a time) must not renumber any group.
    import numpy as np

    from jarvis.dataset import dedup

    pool = [bytes([n % 4, n // 4]) + b"\0" * 14 if n % 5 else bytes([n]) * 16 for n in range(40)]
    saved = dedup._MIN_PENDING
    dedup._MIN_PENDING = pending
    try:
        groups, model, order = dedup.GroupIds(), {}, []
        for batch in batches:
            idents = np.array([pool[n] for n in batch], dtype="S16")
            ids = groups.ids_for(idents)
            want = [model.setdefault(pool[n], len(model)) for n in batch]
            fresh = [ident for ident in model if ident not in order]
            order += fresh
            assert ids.tolist() == want
            # Each new group's key, by id: its identity's first 8 bytes, big-endian.
            assert groups.keys.tolist() == [int.from_bytes(ident[:8], "big") for ident in order]
            groups.settle()
        assert len(groups) == len(model)
    finally:
        dedup._MIN_PENDING = saved


def test_threads_past_a_merge_of_the_group_ids_split_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 600 threads of 1 to 4 records and records of none, numbered with the group ids merged
    # every few groups (as a million threads merge): the same files as with no merge, each
    # thread whole.
    rng = random.Random(8)
    records = [reply(i, thread=f"t{rng.randrange(600)}" if i % 7 else None) for i in range(1500)]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    render_dataset(recipe(src), tmp_path / "once")
    monkeypatch.setattr("jarvis.dataset.dedup._MIN_PENDING", 3)
    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 8192)
    render_dataset(recipe(src), tmp_path / "merged")
    once = {p.name: p.read_bytes() for p in (tmp_path / "once").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()} == once
    split_of: dict[str, set[str]] = {}
    loose = 0
    for entry in read_rows(tmp_path / "merged" / "records.jsonl"):
        thread = entry["record"].get("thread")
        loose += thread is None
        if thread is not None:
            split_of.setdefault(thread, set()).add(entry["split"])
    assert loose == len([r for r in records if "thread" not in r])
    assert len(split_of) > 500 and all(len(s) == 1 for s in split_of.values())
    assert {s for (s,) in split_of.values()} == {"train", "valid", "test"}


def test_the_whole_array_commit_keeps_what_the_record_by_record_one_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small tasks: duplicates within a task, across tasks (sorted and still pending) and
    # across files, threads spanning tasks, two tagged inputs and one with records of its own
    # tag (that task takes the record-by-record path).
    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 2048)
    rng = random.Random(7)
    picks = [rng.randrange(900) for _ in range(3000)]
    rows = [reply(k, thread=f"t{k % 120}") for k in picks]
    a = write_jsonl(tmp_path / "a.jsonl", rows[:2000])
    b = write_jsonl(tmp_path / "b.jsonl", rows[1500:] + [reply(5, tags=["own"])])
    settings = {"min_split_rows": 1}
    outs = []
    for fast in (True, False):
        monkeypatch.setattr("jarvis.dataset.records.FAST_COMMIT", fast)
        out = tmp_path / f"out-{fast}"
        manifest = render_dataset(recipe(f"x={a}", f"y={b}", **settings), out, jobs=1)
        outs.append((manifest, {f: (out / f).read_bytes() for f in OUT_FILES}))
    (fast_manifest, fast_files), (slow_manifest, slow_files) = outs
    assert fast_files == slow_files
    for key in ("records", "duplicates", "inputs", "splits"):
        assert fast_manifest[key] == slow_manifest[key]
    assert fast_manifest["duplicates"] > 1000


def test_the_last_megabytes_of_a_file_are_cut_in_ever_smaller_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import itertools

    from jarvis.dataset.records import InputStats, file_tasks

    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 4096)
    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(800)])
    item = InputStats(path=str(src), tag="default", sha256="")
    tasks = [t for t, _ in file_tasks(0, src, "default", itertools.count().__next__, item)]
    size = src.stat().st_size
    longest = max(len(line) for line in src.read_bytes().splitlines(keepends=True))
    # Each task is cut at a line end after its nominal size: 4 KB while more than 32 KB are
    # left, then an eighth of what is left, at least 256 bytes.
    for task in tasks:
        left = size - task.start
        nominal = max(min(4096, left // 8), 256)
        assert min(nominal, left) <= task.length < nominal + longest
    late = [t for t in tasks if size - t.start <= 8 * 4096]
    assert len(late) >= 20 and late[-1].length < 256 + longest
    assert sum(t.length for t in tasks) == size and item.sha256


@pytest.mark.parametrize("contract", ["reply@1", "codegen@1"])
def test_the_plain_validation_path_writes_what_pydantic_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contract: str
) -> None:
    # Valid records of every shape the schema allows (nulls, ids, own tags, defaults left
    # out, unicode) and invalid ones (wrong types, unknown keys, empty lists, a bool for a
    # string): the plain path answers the first, pydantic the second, in both runs alike.
    rng = random.Random(3)
    rows: list[dict[str, Any]] = []
    for i in range(400):
        r = reply(i, thread=f"t{i % 9}") if contract == "reply@1" else code(i)
        roll = rng.random()
        if roll < 0.1:
            r["id"] = f"x{i % 50}"
        elif roll < 0.2:
            r["tags"] = ["perfect"] if i % 2 else []
        elif roll < 0.25:
            r["id"] = None
        elif roll < 0.3:
            r["tags"] = [1]
        elif roll < 0.35:
            r["unknown"] = "key"
        elif roll < 0.4:
            r[next(iter(r))] = True
        elif roll < 0.45 and contract == "reply@1":
            r["messages"] = []
        elif roll < 0.5 and contract == "reply@1":
            r["messages"][0]["text"] = "Zoë 😂 \t"
            r["thread"] = None
        rows.append(r)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    outs = []
    for plain in (True, False):
        if not plain:
            monkeypatch.setattr("jarvis.dataset.scan.plain_dumper", lambda schema: None)
        out = tmp_path / f"out-{plain}"
        manifest = render_dataset(recipe(src, contract=contract, max_reject_rate=0.5), out, jobs=1)
        outs.append((manifest, {f: (out / f).read_bytes() for f in (*OUT_FILES, "rejects.jsonl")}))
    (plain_manifest, plain_files), (slow_manifest, slow_files) = outs
    assert plain_files == slow_files
    assert plain_manifest["records"] == slow_manifest["records"]
    assert plain_manifest["rejects"] == slow_manifest["rejects"]
    assert 50 < plain_manifest["rejects"] < 200


@settings(max_examples=200, deadline=None)
@given(system=st.text(st.characters(codec="utf-8")), user=st.text(max_size=5))
def test_every_chat_row_starts_with_the_head_the_spill_leaves_out(system: str, user: str) -> None:
    # The spill stores a row without `row_head` and pass 2 writes it back: it must be the
    # bytes orjson gives every row of the contract, whatever its system prompt holds.
    from types import SimpleNamespace

    from jarvis.dataset.row import row_head

    contract: Any = SimpleNamespace(system_prompt=system)
    head = row_head(contract, "chat")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    row = orjson.dumps({"messages": messages, "id": "0123456789abcdef"})
    assert head.endswith(b"},") and row.startswith(head) and row[len(head) :].startswith(b"{")
    assert row_head(contract, "completions") == row_head(contract, "text") == b""


def test_the_rows_written_hold_their_head_once(tmp_path: Path) -> None:
    from jarvis.dataset.row import RowRenderer, row_head

    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(200)])
    render_dataset(recipe(src), tmp_path / "out", jobs=1)
    contract = load_contract("reply@1")
    head = row_head(contract, "chat")
    row, _, _ = RowRenderer(contract, recipe(src)).render(None, "x", {"messages": [
        {"sender": "A", "text": "b"}], "reply": "c"})  # fmt: skip
    assert head and row.startswith(head)
    for name in ("train", "valid", "test"):
        for line in (tmp_path / "out" / f"{name}.jsonl").read_bytes().splitlines():
            assert line.startswith(head) and line.count(head) == 1
            assert orjson.loads(line)["messages"][0]["content"] == contract.system_prompt
