"""A user's own contract in their own root: own schema module, samples, diff, audit, dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis import build_prompt, load_contract, render_example
from jarvis.cli import cli
from jarvis.dataset import Recipe, render_dataset

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "templates"
SCHEMA = """
from jarvis.schemas import Record


class TicketInput(Record):
    TARGET_FIELD = "answer"

    id: str | None = None
    question: str
    answer: str | None = None
"""
SPEC = """name: support
versions:
  1:
    schema: support_schema:TicketInput
    templates: {system: system.j2, user: user.j2, assistant: assistant.j2}
    parameters: {product: Acme}
    checks:
      - non_empty: {}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "contracts").mkdir(parents=True)
    # The schema module sits in the root itself and is loaded by path: no PYTHONPATH.
    (app / "support_schema.py").write_text(SCHEMA)
    (app / "contracts" / "support.yaml").write_text(SPEC)
    v1 = app / "prompts" / "support" / "v1"
    v1.mkdir(parents=True)
    (v1 / "system.j2").write_text("You answer {{ product }} support tickets.\n")
    (v1 / "user.j2").write_text("Ticket: {{ question }}\n")
    (v1 / "assistant.j2").write_text("{{ answer }}\n")
    return app


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_own_schema_renders_and_locks(root: Path) -> None:
    record = {"question": "reset my password", "answer": "Use the link on the login page."}
    prompt = build_prompt(record, contract="support", root=root)
    assert prompt.messages == [
        {"role": "system", "content": "You answer Acme support tickets."},
        {"role": "user", "content": "Ticket: reset my password"},
    ]
    assert render_example(record, contract="support", root=root)["messages"][:-1] == prompt.messages
    assert invoke("contract", "lock", "--root", str(root))[1] == "locked support@1\n"
    assert load_contract("support", root=root).locked


def test_diff_and_audit_need_samples_then_use_them(root: Path) -> None:
    code, _, err = invoke("--root", str(root), "diff", "support@1", "support@1")
    assert code == 3
    assert "no sample inputs for schema TicketInput: add a few records to" in err
    samples = [{"question": "where is my order?", "answer": "It ships today."}]
    (root / "prompts" / "support" / "samples.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for s in samples)
    )
    assert invoke("--root", str(root), "diff", "support@1", "support@1")[0] == 0
    template = str(FIXTURES / "qwen2.5-instruct.jinja")
    code, out, _ = invoke(
        "--root", str(root), "verify", "--chat-template", template, "--contract", "support"
    )
    assert code == 0, out
    assert "verdict: compatible" in out


def test_render_dataset_with_own_schema(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "tickets.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(120))
    )
    manifest = render_dataset(
        Recipe.build(contract="support@1", inputs=[str(data)]), tmp_path / "out", root=root
    )
    assert manifest["contract"]["ref"] == "support@1"
    assert sum(s["rows"] for s in manifest["splits"].values()) == 120


def test_contract_new_scaffolds_a_working_locked_contract(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    code, out, err = invoke("contract", "new", "help-desk", "--root", str(root))
    assert code == 0, err
    assert out.splitlines()[0] == f"created and locked help-desk@1 in {root}:"
    assert (root / "help_desk_schema.py").is_file()
    code, out, _ = invoke("--root", str(root), "contract", "check")
    assert code == 0
    rows = [{"question": f"q{i}?", "answer": f"a {i}."} for i in range(100)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = invoke(
        "--root", str(root), "render-dataset", "--contract", "help-desk@1", "--input", str(data),
        "--out", str(tmp_path / "ds"), "-q",
    )  # fmt: skip
    assert code == 0, err
    # The dataset remembers its root: verify needs no --root.
    code, out, _ = invoke("verify", str(tmp_path / "ds"))
    assert code == 0, out
    code, out, _ = invoke("--root", str(root), "diff", "help-desk@1", "help-desk@1")
    assert code == 0
    # The stored recipe rebuilds the dataset from anywhere: it names the root.
    from jarvis.dataset import load_manifest

    manifest = load_manifest(tmp_path / "ds")
    again = render_dataset(Recipe.build(**manifest["recipe"]), tmp_path / "ds2")
    assert again["contract"]["fingerprint"] == manifest["contract"]["fingerprint"]
    code, _, err = invoke("contract", "new", "help-desk", "--root", str(root))
    assert code == 3 and "exists; choose another name" in err
    code, _, err = invoke("contract", "new", "Bad Name", "--root", str(root))
    assert code == 3 and "lowercase letters" in err


def test_a_template_error_on_data_comes_after_earlier_errors_in_input_order(
    root: Path, tmp_path: Path
) -> None:
    from jarvis.errors import ContractError, TokenizationError
    from tokenizer_fixture import make_tokenizer

    # The template fails on one record's data (a contract bug, named where it showed).
    (root / "prompts" / "support" / "v1" / "user.j2").write_text(
        "Ticket: {{ question }}{% if question == 'boom' %}{{ 1 // 0 }}{% endif %}\n"
    )
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(100)]
    rows[60]["question"] = "boom"
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ContractError) as info:
        render_dataset(
            Recipe.build(contract="support@1", inputs=[str(data)]), tmp_path / "o", root=root
        )
    assert str(info.value).startswith(f"{data}:61: prompts/support/v1/user.j2: ZeroDivisionError")
    # An earlier record over the token limit, in the same task, is the first error.
    rows[20]["answer"] = "word " * 300
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = make_tokenizer(tmp_path / "tok")
    recipe = Recipe.build(
        contract="support@1", inputs=[str(data)], tokenizer=str(tok), max_seq_length=200
    )
    for jobs in (1, 2):
        with pytest.raises(TokenizationError) as failed:
            render_dataset(recipe, tmp_path / "o", root=root, jobs=jobs)
        assert str(failed.value).startswith(f"{data}:21: row has ")
