"""Hostile data for render-dataset, verify and eval: a clear error or a reject, never a traceback.

Each case runs the CLI (`CliRunner`) and asserts the exit code and the error line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from contract_root import copy_root
from jarvis.cli import cli
from jarvis.errors import ContractError


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def reply(i: int) -> dict[str, object]:
    return {"messages": [{"sender": "Sam", "text": f"you up {i}?"}], "reply": f"ya {i}"}


def render(*args: str) -> tuple[int, str, str]:
    return invoke("render-dataset", "--contract", "reply@1", *args)


def array_with(tmp_path: Path, raw_item: str) -> Path:
    items = [json.dumps(reply(i)) for i in range(100)]
    path = tmp_path / "a.json"
    path.write_text("[\n" + ",\n".join([*items[:20], raw_item, *items[20:]]) + "\n]\n")
    return path


def test_lone_surrogate_in_a_json_array_is_a_reject(tmp_path: Path) -> None:
    bad = '{"messages": [{"sender": "Sam", "text": "\\udc80"}], "reply": "x"}'
    path = array_with(tmp_path, bad)
    code, _, err = render("--input", str(path), "--out", str(tmp_path / "o"))
    assert code == 5
    assert err.startswith(f"error: {path}:22: invalid JSON: ")
    code, _, err = render(
        "--input", str(path), "--out", str(tmp_path / "o"), "--max-reject-rate", "1", "-q"
    )
    assert code == 0, err
    (entry,) = [
        json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()
    ]
    assert entry["raw"] == bad and entry["line"] == 22


def test_deep_nesting_in_a_json_array_is_a_clear_error(tmp_path: Path) -> None:
    path = array_with(tmp_path, '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = render("--input", str(path), "--out", str(tmp_path / "o"))
    assert code == 5
    assert err == f"error: {path}:22: invalid JSON array (item 21): nested too deeply\n"


def test_deep_nesting_in_jsonl_is_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    deep = '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text("".join(json.dumps(reply(i)) + "\n" for i in range(100)) + deep + "\n")
    code, _, err = render("--input", str(path), "--out", str(tmp_path / "o"))
    assert code == 5
    assert err.startswith(f"error: {path}:101: invalid JSON: depth limit exceeded")


def test_a_huge_expression_in_a_codegen_target_is_checked_fast(tmp_path: Path) -> None:
    body = "```python\nx = " + "1+" * 100_000 + "1\n```"
    target = f"### Explanation\nAdds.\n### Solution\n{body}\n### Test\n{body}\n"
    rows = [{"instruction": f"Task {i}.", "output": target} for i in range(100)]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = time.monotonic()
    code, out, err = invoke(
        "render-dataset", "--contract", "codegen@1", "--input", str(path),
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 0, err
    assert time.monotonic() - start < 30
    assert "0.0%" in out.splitlines()[-4]  # rendered, and counted as not compliant


@pytest.mark.parametrize("split", ["[[1], 0, 0]", "5", "null", "{a: 1}", "[a, b, c]"])
def test_malformed_recipe_splits_are_clear_errors(tmp_path: Path, split: str) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps(reply(0)) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"contract: reply@1\ninputs: [a.jsonl]\nsplit: {split}\n")
    code, _, err = invoke("render-dataset", "--recipe", str(recipe), "--out", str(tmp_path / "o"))
    assert code == 2
    assert err.startswith("error: recipe: split: --split ") and "expected three numbers" in err


def test_hidden_files_and_folders_are_not_inputs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / ".git").mkdir(parents=True)
    (data / ".git" / "config.json").write_text('{"core": 1}\n')
    (data / ".out.x.partial").mkdir()
    (data / ".out.x.partial" / "train.jsonl").write_text('{"messages": []}\n')
    (data / ".hidden.jsonl").write_text("not json\n")
    (data / "a.jsonl").write_text("".join(json.dumps(reply(i)) + "\n" for i in range(100)))
    code, _, err = render("--input", str(data), "--out", str(tmp_path / "o"), "-q")
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [i["path"] for i in manifest["inputs"]] == [str(data / "a.jsonl")]


def test_an_unwritable_output_is_exit_13_and_the_previous_output_survives(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(reply(i)) + "\n" for i in range(100)))
    (tmp_path / "file").write_text("")
    code, _, err = render("--input", str(path), "--out", str(tmp_path / "file" / "o"))
    assert code == 13
    assert err.startswith(f"error: {tmp_path / 'file' / 'o'}: cannot write the output")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('{{ "{0.__class__}".format_map({}) }}', "str.format_map"),
        ("{{ range(10**9) | list | length }}", "exponentiation (**)"),
        ("{{ 10**5000 }}", "exponentiation (**)"),
        ("{{ range(1000000) | length }}", "range(1,000,000)"),
        ('{{ "a" * 1000000000 }}', "a repetition by 1,000,000,000"),
        ("{{ messages.__class__ }}", "the attribute '__class__'"),
        ("{{ messages['__class__'] }}", "the item '__class__'"),
        ("{{ persona_name.format(1) }}", "str.format"),
    ],
)
def test_hostile_template_constructs_are_refused_at_load(
    tmp_path: Path, template: str, message: str
) -> None:
    root = copy_root(tmp_path / "root")
    user = root / "prompts" / "reply" / "v1" / "user.j2"
    user.write_text(user.read_text() + template + "\n")
    code, _, err = invoke("--root", str(root), "contract", "show", "reply@1")
    assert code == 3
    line = len(user.read_text().splitlines())
    assert err == f"error: {user}:{line}: {message}" + (
        err.split(message, 1)[1] if message in err else ""
    )
    assert "is not allowed in a contract template" in err


def test_a_template_failing_on_one_record_names_the_record(tmp_path: Path) -> None:
    root = copy_root(tmp_path / "root")
    user = root / "prompts" / "reply" / "v1" / "user.j2"
    user.write_text(user.read_text() + '{{ "x" * (messages | length * 40000) }}\n')
    os.remove(root / "contracts.lock")
    path = tmp_path / "a.jsonl"
    rows = [reply(i) for i in range(100)]
    rows[7] = {"messages": [{"sender": "Sam", "text": "hi"}] * 3, "reply": "x"}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = invoke(
        "--root", str(root), "render-dataset", "--contract", "reply@1", "--input", str(path),
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == ContractError.exit_code
    assert err.startswith(f"error: {path}:8: prompts/reply/v1/user.j2: ")
    assert "a repetition to" in err


def test_verify_refuses_manifest_paths_outside_the_dataset(
    tmp_path: Path, reply_dataset: Path
) -> None:
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(reply_dataset, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("../../etc/passwd", "/etc/shadow", "..", "sub/x.jsonl"):
        changed = {**manifest, "files": {**manifest["files"], name: {"sha256": "x", "rows": 1}}}
        (folder / "manifest.json").write_text(json.dumps(changed))
        code, out, _ = invoke("verify", str(folder))
        assert code == 1
        assert (
            f"FAIL manifest: {folder / 'manifest.json'}: files: {name!r} is not a file of " in out
        )
        assert "passwd" not in out.split("refused", 1)[1]


def test_eval_refuses_an_edited_records_file(
    tmp_path: Path, reply_dataset: Path, tiny_model: Path
) -> None:
    import shutil

    folder = tmp_path / "ds"
    shutil.copytree(reply_dataset, folder)
    records = folder / "records.jsonl"
    records.write_text(records.read_text().replace("ya", "no"))
    code, _, err = invoke(
        "eval", "--dataset", str(folder), "--model", str(tiny_model), "--out", str(tmp_path / "e")
    )
    assert code == 6
    assert err.startswith(f"error: {records}: changed since it was rendered")


@pytest.fixture
def small_fs(tmp_path: Path) -> object:
    """A real 384 KiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_exit_13_and_the_previous_output_survives(
    tmp_path: Path, small_fs: Path
) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(reply(i)) + "\n" for i in range(100)))
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(reply(i)) + "\n" for i in range(20_000)))
    out = small_fs / "o"
    assert render("--input", str(small), "--out", str(out), "-q")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = render("--input", str(big), "--out", str(out), "--force")
    assert code == 13, err
    assert err.startswith(f"error: {out}: cannot write the output (") and "No space left" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in small_fs.iterdir()] == ["o"]


def test_a_write_that_fails_in_pass_two_is_exit_13_and_the_previous_output_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pass 2 writes and hashes in a thread: its error must still come out as the CLI's, with
    # the thread gone and the previous output untouched.
    import errno
    import threading

    from jarvis.dataset import write

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(reply(i)) + "\n" for i in range(300)))
    out = tmp_path / "o"
    assert render("--input", str(src), "--out", str(out), "-q")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def full(self: object, data: bytes, rows: int) -> None:
        calls.append(threading.current_thread().name)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(write._Writer, "write", full)
    code, _, err = render("--input", str(src), "--out", str(out), "--force", "-q")
    assert code == 13, err
    assert err.startswith(f"error: {out}: cannot write the output (") and "No space left" in err
    assert calls and calls[0].startswith("jarvis-write")
    assert not [t for t in threading.enumerate() if t.name.startswith("jarvis-write")]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "o"]


def test_a_read_only_output_folder_is_exit_13(tmp_path: Path, small_fs: Path) -> None:
    import subprocess

    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(reply(i)) + "\n" for i in range(100)))
    out = small_fs / "o"
    assert render("--input", str(small), "--out", str(out), "-q")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    code, _, err = render("--input", str(small), "--out", str(out), "--force")
    assert code == 13, err
    assert "Read-only file system" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_nested_range_loops_are_bounded_at_render(tmp_path: Path) -> None:
    root = copy_root(tmp_path / "root")
    user = root / "prompts" / "reply" / "v1" / "user.j2"
    loops = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    user.write_text(user.read_text() + loops + "\n")
    os.remove(root / "contracts.lock")
    start = time.monotonic()
    code, _, err = invoke(
        "--root", str(root), "reply", "--contract", "reply@1", "--dry-run", "hi"
    )  # fmt: skip
    assert time.monotonic() - start < 10
    assert code == 3
    assert err == (
        "error: prompts/reply/v1/user.j2: range loops iterated over 100,000 times in one render\n"
    )


def test_a_group_key_that_is_not_a_field_is_refused(tmp_path: Path) -> None:
    root = copy_root(tmp_path / "root")
    spec = root / "contracts" / "reply.yaml"
    spec.write_text(spec.read_text().replace("group_key: thread", "group_key: nope"))
    code, _, err = invoke("--root", str(root), "contract", "show", "reply@1")
    assert code == 3
    assert err == (
        "error: contracts/reply.yaml: versions.1.group_key: 'nope' is not a field of ReplyInput\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["render-dataset", "--seed", "99999999999999999999999"],
        ["render-dataset", "--seed", "-1"],
        ["render-dataset", "--max-reject-rate", "nan"],
        ["train", "--learning-rate", "nan"],
        ["train", "--learning-rate", "inf"],
        ["reply", "--temp", "nan"],
        ["reply", "--top-p", "nan"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(args: list[str]) -> None:
    code, _, err = invoke(*args)
    assert code == 2
    option = args[1]
    assert "Invalid value for " in err and f"'{option}'" in err
