"""`jarvis diff`: two contract versions (or a dataset and a contract) rendered side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from contract_root import add_version, copy_root
from jarvis.cli import cli
from jarvis.dataset import Recipe, render_dataset
from jarvis.lock import write_lock

OLD = "- Reply with the message text only."
NEW = "- Reply with the message text only, never in quotes."
RECORDS = [
    {"messages": [{"sender": "Sam", "text": f"msg {i}"}], "reply": f"ok {i}", "thread": f"t{i}"}
    for i in range(8)
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contract root with reply@2 = reply@1 plus one changed system-prompt line, locked."""
    path = copy_root(tmp_path_factory.mktemp("root"))
    system = add_version(path, "reply", 1, 2) / "system.j2"
    system.write_text(system.read_text().replace(OLD, NEW))
    assert write_lock(path) == ["reply@2"]
    return path


@pytest.fixture(scope="module")
def dataset(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    src = folder / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    recipe = Recipe.build(
        contract="reply@1", inputs=[str(src)], split=(0.5, 0.25, 0.25), batch_size=2
    )
    render_dataset(recipe, folder / "ds", root=root)
    return folder / "ds"


def run(root: Path, *args: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(cli, ["--root", str(root), "diff", *args])
    return result.exit_code, result.stdout.splitlines(), result.stderr


def changes(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("---", "+++"))]


def test_versions_differ_by_exactly_the_changed_line(root: Path) -> None:
    code, lines, err = run(root, "reply@1", "reply@2")
    assert code == 1
    assert err == "error: reply@1 and reply@2 differ\n"
    # The system prompt block, then one chat-string block; the other inputs repeat that change.
    assert lines[:2] == ["--- a/reply@1:system", "+++ b/reply@2:system"]
    assert "--- a/reply@1:chat[short]" in lines
    assert not any(":user[" in ln for ln in lines)
    assert changes(lines) == [f"-{OLD}", f"+{NEW}", f"-{OLD}<|im_end|>", f"+{NEW}<|im_end|>"]
    assert lines[-2:] == [
        "# 2 more input(s) have a chat string diff identical to one shown above",
        "# reply@1 and reply@2 differ: system prompt, chat string (3 of 3 inputs)",
    ]


def test_same_version_is_identical(root: Path) -> None:
    code, lines, err = run(root, "reply@1", "reply@1")
    assert code == 0 and err == ""
    assert lines == [
        "# reply@1 and reply@1 render identical system prompts, user contents and chat "
        "strings for 3 inputs"
    ]


def test_user_template_change_shows_per_input(tmp_path: Path) -> None:
    path = copy_root(tmp_path)
    user = add_version(path, "reply", 1, 2) / "user.j2"
    user.write_text(
        user.read_text().replace(
            "{{ m.sender }}: {{ m.text }}", "{{ m.sender }} said: {{ m.text }}"
        )
    )
    write_lock(path)
    code, lines, _ = run(path, "reply@1", "reply@2")
    assert code == 1
    assert "--- a/reply@1:user[short]" in lines and "+++ b/reply@2:user[short]" in lines
    assert "-Sam: you coming tonight?" in lines and "+Sam said: you coming tonight?" in lines
    assert (
        lines[-1]
        == "# reply@1 and reply@2 differ: user content (3 of 3 inputs), chat string (3 of 3 inputs)"
    )


def test_different_schemas_are_named(root: Path) -> None:
    code, lines, _ = run(root, "reply@1", "codegen@1")
    assert code == 1
    assert lines[0] == (
        "# schemas differ: reply@1 takes ReplyInput, codegen@1 takes CodegenInput; "
        "no input renders both ways"
    )
    assert lines[-1] == "# reply@1 and codegen@1 differ: system prompt, schema"


def test_dataset_against_contracts(root: Path, dataset: Path) -> None:
    code, lines, _ = run(root, str(dataset), "reply@1")
    assert code == 0
    assert lines[-1].endswith(
        "render identical system prompts, user contents and chat strings for 8 inputs"
    )
    code, lines, _ = run(root, str(dataset), "reply@2")
    assert code == 1
    assert lines[0] == f"--- a/{dataset}:system"
    assert changes(lines) == [f"-{OLD}", f"+{NEW}", f"-{OLD}<|im_end|>", f"+{NEW}<|im_end|>"]
    assert (
        lines[-1] == f"# {dataset} and reply@2 differ: system prompt, chat string (8 of 8 inputs)"
    )


def test_in_place_edit_of_a_locked_version_is_shown(
    root: Path, dataset: Path, tmp_path: Path
) -> None:
    import shutil

    edited = tmp_path / "root"
    shutil.copytree(root, edited)
    system = edited / "prompts" / "reply" / "v1" / "system.j2"
    system.write_text(system.read_text() + "- Never use emoji.\n")
    code, lines, _ = run(edited, str(dataset), "reply@1")
    assert code == 1
    assert lines[0].startswith(f"# {dataset.name}: rendered under reply@1 ")
    assert lines[1].startswith("# reply@1 changed since it was locked: prompts/reply/v1/system.j2")
    assert "+- Never use emoji.<|im_end|>" in lines


def test_chat_template_option_renders_through_vendor_template(root: Path) -> None:
    template = Path(__file__).parent / "fixtures" / "templates" / "gemma-3-it.jinja"
    code, lines, _ = run(root, "reply@1", "reply@2", "--chat-template", str(template))
    assert code == 1
    text = "\n".join(lines)
    assert "<end_of_turn>" in text and "<|im_start|>" not in text
    assert f"+{NEW}" in lines
