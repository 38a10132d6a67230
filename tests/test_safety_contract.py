"""Hostile contracts: no code runs from a contract, no alias bomb hangs, no edited lock passes.

Each case goes through the CLI (`CliRunner`) and asserts the exit code and the error line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from contract_root import copy_root
from jarvis.cli import cli
from jarvis.contract import load_contract

SCHEMA = """
from pathlib import Path

from pydantic import field_validator

from jarvis.schemas import Record

Path(__file__).with_name("ran.txt").write_text("ran") if False else None


class TicketInput(Record):
    TARGET_FIELD = "answer"

    question: str
    answer: str | None = None
{validator}
"""
UPPER = """
    @field_validator("question")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()
"""
SPEC = """name: support
versions:
  1:
    schema: {schema}
    templates: {{system: system.j2, user: user.j2, assistant: assistant.j2}}
"""


def make_root(tmp_path: Path, schema: str = "support_schema:TicketInput", body: str = "") -> Path:
    root = tmp_path / "app"
    (root / "contracts").mkdir(parents=True)
    (root / "contracts" / "support.yaml").write_text(SPEC.format(schema=schema))
    v1 = root / "prompts" / "support" / "v1"
    v1.mkdir(parents=True)
    (v1 / "system.j2").write_text("You answer tickets.\n")
    (v1 / "user.j2").write_text("Ticket: {{ question }}\n")
    (v1 / "assistant.j2").write_text("{{ answer }}\n")
    (root / "support_schema.py").write_text(SCHEMA.format(validator=body))
    return root


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "schema",
    ["this:X", "json:JSONDecoder", "evil_schema:X", ":X", "..evil:X", ".:X", "a.b:X", "x/y:X"],
)
def test_schema_refs_outside_the_root_are_refused_without_running(
    tmp_path: Path, schema: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # An importable evil module on sys.path must never be imported.
    evil = tmp_path / "site"
    evil.mkdir()
    (evil / "evil_schema.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(evil))
    root = make_root(tmp_path, schema=repr(schema))
    for args in (["contract", "list"], ["contract", "show", "support"]):
        code, out, err = invoke("--root", str(root), *args)
        assert code == 3, (args, err)
        assert err.startswith("error: schema ") and schema in err
        assert "Traceback" not in err
    code, _, err = invoke("reply", "--root", str(root), "--contract", "support", "--dry-run", "hi")
    assert code == 3
    assert not (tmp_path / "pwned").exists()
    assert "Beautiful is better than ugly" not in capfd.readouterr().out  # `import this`


def test_root_schema_loads_by_path_and_its_source_is_fingerprinted(tmp_path: Path) -> None:
    plain = load_contract("support", root=make_root(tmp_path / "a"))
    upper = load_contract("support", root=make_root(tmp_path / "b", body=UPPER))
    assert "schema-source:support_schema.py" in plain.parts
    # Same fields, same JSON schema; only a validator differs: the fingerprints must differ.
    assert plain.parts["schema:TicketInput"] == upper.parts["schema:TicketInput"]
    assert plain.fingerprint != upper.fingerprint
    record = {"question": "help", "answer": "ok"}
    assert plain.messages(plain.validate(record), with_target=False)[1]["content"] == "Ticket: help"
    assert upper.messages(upper.validate(record), with_target=False)[1]["content"] == "Ticket: HELP"


def test_a_locked_schema_module_that_changed_never_runs(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert invoke("--root", str(root), "contract", "lock")[0] == 0
    marker = tmp_path / "ran.txt"
    (root / "support_schema.py").write_text(
        SCHEMA.format(validator="").replace("if False else None", "if True else None")
    )
    for args in (["contract", "list"], ["contract", "check"], ["contract", "show", "support"]):
        code, _, err = invoke("--root", str(root), *args)
        assert code == 4, (args, err)
        assert err == (
            "error: support@1: the schema module support_schema.py is not the one locked in "
            "contracts.lock (changed); it was not run. A locked version is immutable: copy it "
            "to a new version and run `jarvis contract lock`\n"
        )
    assert not marker.exists() and not (root / "ran.txt").exists()


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
)


def test_yaml_alias_bomb_in_a_contract_is_refused_fast(tmp_path: Path) -> None:
    root = copy_root(tmp_path / "root")
    spec = root / "contracts" / "reply.yaml"
    spec.write_text(
        spec.read_text() + "x_bomb:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines())
    )
    start = time.monotonic()
    code, _, err = invoke("--root", str(root), "contract", "list")
    assert time.monotonic() - start < 5
    assert code == 3
    assert err.startswith(f"error: {spec}: invalid YAML: ")
    assert "YAML aliases (*name) are not allowed in jarvis files" in err and "line " in err


def test_yaml_alias_in_a_recipe_is_refused_fast(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("contract: reply@1\ni: &i [a.jsonl]\ninputs: *i\n")
    start = time.monotonic()
    code, _, err = invoke("render-dataset", "--recipe", str(recipe), "--out", str(tmp_path / "o"))
    assert time.monotonic() - start < 5
    assert code == 2
    assert "YAML aliases (*name) are not allowed in jarvis files" in err
    assert not (tmp_path / "o").exists()


def _edit_lock(root: Path, edit: object) -> None:
    path = root / "contracts.lock"
    lock = json.loads(path.read_text())
    edit(lock)  # type: ignore[operator]
    path.write_text(json.dumps(lock))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda lock: lock["reply@1"]["parts"].update({"renderer": "0" * 64}),
            "reply@1: the fingerprint is not the hash of its parts (the lock was edited)",
        ),
        (lambda lock: lock["reply@1"].update({"fingerprint": 5}), "reply@1: fingerprint: expected"),
        (
            lambda lock: lock["reply@1"].update({"parts": "abc"}),
            "reply@1: parts: expected a mapping",
        ),
        (lambda lock: lock.update({"reply@1": []}), "reply@1: an entry is exactly"),
        (lambda lock: lock["codegen@1"].pop("parts"), "codegen@1: an entry is exactly"),
    ],
)
def test_an_edited_or_malformed_lock_is_refused(tmp_path: Path, edit: object, message: str) -> None:
    root = copy_root(tmp_path / "root")
    _edit_lock(root, edit)
    for args in (["contract", "list"], ["contract", "check"]):
        code, _, err = invoke("--root", str(root), *args)
        assert code == 4, err
        assert err.startswith(f"error: {root / 'contracts.lock'}: {message}"), err
