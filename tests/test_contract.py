"""Contract loading: spec validation, template variables, includes, refs, roots, lock on load."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract_root import add_version, copy_root
from jarvis.contract import load_all, load_contract, parse_ref, resolve_root
from jarvis.errors import (
    ContractError,
    ContractNotFoundError,
    LockError,
    TemplateVariableError,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_root(tmp_path / "root")


def test_bundled_contracts_load_and_are_locked() -> None:
    refs = {c.ref: c for c in load_all()}
    assert sorted(refs) == ["codegen@1", "reply@1", "reply@2"]
    assert all(c.locked and len(c.fingerprint) == 64 for c in refs.values())
    assert refs["reply@1"].group_key == "thread"
    assert refs["reply@1"].system_prompt.startswith("You are Jwalin.")


def test_bare_name_means_latest_version(root: Path) -> None:
    add_version(root, "reply", 1, 2)
    assert load_contract("reply", root=root).ref == "reply@2"
    assert load_contract("reply@v1", root=root).ref == "reply@1"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nope", "no contract 'nope' in"),
        ("reply@9", "no version 9 of 'reply' (known: reply@1)"),
        ("reply@x", "'reply@x': version must be an integer, as in reply@1"),
    ],
)
def test_unknown_refs(root: Path, ref: str, message: str) -> None:
    with pytest.raises(ContractNotFoundError, match=None) as info:
        load_contract(ref, root=root)
    assert message in str(info.value)


def test_parse_ref() -> None:
    assert parse_ref("reply") == ("reply", None)
    assert parse_ref("reply@2") == ("reply", 2)


def test_root_from_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_ROOT", str(root))
    assert resolve_root() == root.resolve()
    assert load_contract("reply@1").root == root.resolve()


def test_not_a_root(tmp_path: Path) -> None:
    with pytest.raises(ContractNotFoundError, match="not a contract root"):
        load_contract("reply", root=tmp_path)


def test_undefined_template_variable_is_named_at_load(root: Path) -> None:
    user = root / "prompts/reply/v1/user.j2"
    user.write_text(user.read_text() + "{{ mood }}\n")
    (root / "contracts.lock").unlink()
    with pytest.raises(TemplateVariableError) as info:
        load_contract("reply@1", root=root)
    assert str(info.value) == (
        "prompts/reply/v1/user.j2: variable 'mood' is neither a field of ReplyInput "
        "nor a parameter of reply@1"
    )


def test_unused_schema_field_is_refused(root: Path) -> None:
    (root / "prompts/reply/v1/user.j2").write_text(
        "{% for m in messages %}{{ m.text }}{% endfor %}"
    )
    (root / "contracts.lock").unlink()
    with pytest.raises(
        TemplateVariableError, match="field 'retrieved' of ReplyInput is used by no"
    ):
        load_contract("reply@1", root=root)


def test_system_template_must_be_static(root: Path) -> None:
    system = root / "prompts/reply/v1/system.j2"
    system.write_text(system.read_text() + "{{ messages }}")
    (root / "contracts.lock").unlink()
    with pytest.raises(TemplateVariableError, match="system template may use parameters only"):
        load_contract("reply@1", root=root)


def test_include_outside_contract_folder_is_refused(root: Path) -> None:
    (root / "prompts" / "secret.j2").write_text("secret")
    user = root / "prompts/reply/v1/user.j2"
    user.write_text('{% include "../secret.j2" %}' + user.read_text())
    (root / "contracts.lock").unlink()
    with pytest.raises(ContractError, match="template not found"):
        load_contract("reply@1", root=root)


def test_unknown_spec_key_names_file_and_field(root: Path) -> None:
    spec = root / "contracts/reply.yaml"
    spec.write_text(
        spec.read_text().replace("    group_key: thread", "    group_key: thread\n    colour: red")
    )
    with pytest.raises(ContractError) as info:
        load_contract("reply@1", root=root)
    assert str(info.value).endswith("reply.yaml: versions.1.colour: Extra inputs are not permitted")


def test_unknown_check_is_refused(root: Path) -> None:
    spec = root / "contracts/reply.yaml"
    spec.write_text(spec.read_text().replace("- non_empty: {}", "- sparkles: {}"))
    (root / "contracts.lock").unlink()
    with pytest.raises(ContractError, match="unknown check 'sparkles'"):
        load_contract("reply@1", root=root)


def test_edited_locked_version_fails_on_load_naming_the_file(root: Path) -> None:
    system = root / "prompts/reply/v1/system.j2"
    system.write_text(system.read_text().replace("You are", "You're"))
    with pytest.raises(LockError) as info:
        load_contract("reply@1", root=root)
    assert "reply@1 changed since it was locked: prompts/reply/v1/system.j2 (locked" in str(
        info.value
    )


def test_edit_on_disk_invalidates_the_cache(root: Path) -> None:
    first = load_contract("reply@1", root=root)
    (root / "contracts.lock").unlink()
    system = root / "prompts/reply/v1/system.j2"
    system.write_text(system.read_text() + "- Never use emoji.\n")
    second = load_contract("reply@1", root=root)
    assert second.fingerprint != first.fingerprint
    assert second.system_prompt.endswith("- Never use emoji.")


def test_fingerprint_covers_includes_and_parameters(root: Path) -> None:
    (root / "contracts.lock").unlink()
    base = load_contract("reply@1", root=root).fingerprint
    exemplars = root / "prompts/reply/v1/exemplars.j2"
    exemplars.write_text(exemplars.read_text().replace("them:", "they:"))
    after_include = load_contract("reply@1", root=root).fingerprint
    spec = root / "contracts/reply.yaml"
    spec.write_text(spec.read_text().replace("reply_length_words: 9", "reply_length_words: 10"))
    after_param = load_contract("reply@1", root=root).fingerprint
    assert len({base, after_include, after_param}) == 3


def test_adding_a_version_keeps_the_old_fingerprint(root: Path) -> None:
    before = load_contract("reply@1", root=root).fingerprint
    add_version(root, "reply", 1, 2)
    assert load_contract("reply@1", root=root).fingerprint == before
