"""`jarvis reply`: dry run, JSON, streaming, stamp refusal and warning, strict checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from jarvis import build_simple_reply_prompt, load_contract
from jarvis.cli import cli

pytestmark = pytest.mark.slow


def _run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["reply", *args], input=input)


def _restamp(src: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(src, dest)
    path = dest / "adapter_config.json"
    config = json.loads(path.read_text())
    if changes:
        config["jarvis"].update(changes)
    else:
        del config["jarvis"]
    path.write_text(json.dumps(config))
    return dest


def test_dry_run_without_a_model() -> None:
    result = _run("--dry-run", "you coming?", "--sender", "Sam")
    assert result.exit_code == 0
    expected = build_simple_reply_prompt([{"sender": "Sam", "text": "you coming?"}]).chatml()
    assert result.stdout == expected
    fingerprint = load_contract("reply@2").fingerprint
    assert result.stderr.splitlines()[0] == f"# reply@2 fingerprint {fingerprint}"


def test_dry_run_json_with_the_model_template(tiny_model: Path) -> None:
    thread = "Sam: you coming?\nJwalin: maybe\n"
    result = _run("--dry-run", "--json", "--model", str(tiny_model), "--conversation", "-",
                  input=thread)  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["contract"] == "reply@2"
    assert out["messages"][1]["content"] == "Sam: you coming?\nJwalin: maybe"
    assert out["prompt"].endswith("Jwalin: maybe<|im_end|>\n<|im_start|>assistant\n")


def test_dry_run_codegen_message() -> None:
    result = _run("--dry-run", "--contract", "codegen@1", "Reverse a string.")
    assert result.exit_code == 0
    assert "<|im_start|>user\nReverse a string." in result.stdout


def test_json_reply_with_adapter(tiny_model: Path, trained_adapter: Path) -> None:
    result = _run("--model", str(tiny_model), "--adapter", str(trained_adapter), "--json",
                  "--max-tokens", "4", "--seed", "1", "you coming?")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = json.loads(result.stdout)
    assert out["contract"] == "reply@1"
    assert out["fingerprint"] == load_contract("reply@1").fingerprint
    assert out["adapter"] == str(trained_adapter)
    assert out["generation_tokens"] >= 1 and out["ttft_s"] > 0
    assert out["cached_prefix_tokens"] > 0
    assert [c["name"] for c in out["checks"]] == ["non_empty", "max_words"]
    assert {"passed", "detail"} <= set(out["checks"][0])


def test_edited_fingerprint_is_refused(
    tiny_model: Path, trained_adapter: Path, tmp_path: Path
) -> None:
    bad = _restamp(trained_adapter, tmp_path / "bad", fingerprint="ab" * 32)
    result = _run("--model", str(tiny_model), "--adapter", str(bad), "hi")
    assert result.exit_code == 8
    short = load_contract("reply@1").short_fingerprint
    assert result.stderr == (
        f"error: adapter {bad} was trained on reply@1 (fingerprint abababababab) but the "
        f"contract is reply@1 (fingerprint {short}); retrain the adapter, or pass "
        "--allow-mismatch to load it anyway\n"
    )
    allowed = _run("--model", str(tiny_model), "--adapter", str(bad), "--allow-mismatch",
                   "--max-tokens", "2", "hi")  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stderr.startswith(f"warning: adapter {bad} was trained on reply@1")


def test_unstamped_adapter_warns(tiny_model: Path, trained_adapter: Path, tmp_path: Path) -> None:
    plain = _restamp(trained_adapter, tmp_path / "plain")
    result = _run("--model", str(tiny_model), "--adapter", str(plain), "--max-tokens", "2", "hi")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"warning: adapter {plain} has no jarvis stamp: nothing ties it to reply@2; "
        "retrain it with `jarvis train` to make the prompt format checkable"
    )


def test_strict_fails_on_a_failed_check(tiny_model: Path) -> None:
    # The untrained model greedily emits newlines: the "\n\n" stop leaves an empty reply.
    result = _run("--model", str(tiny_model), "--temp", "0", "--strict", "hi")
    assert result.exit_code == 9
    assert result.stderr.splitlines()[-1] == (
        "error: the reply failed output checks: non_empty (empty output)"
    )
    loose = _run("--model", str(tiny_model), "--temp", "0", "hi")
    assert loose.exit_code == 0


def test_stream_prints_the_same_text(tiny_model: Path) -> None:
    args = ["--model", str(tiny_model), "--temp", "1", "--seed", "5", "--max-tokens", "12"]
    streamed = _run(*args, "--stream", "--stop", "@@", "hi")
    whole = _run(*args, "--json", "--stop", "@@", "hi")
    assert streamed.exit_code == 0 and whole.exit_code == 0
    assert streamed.stdout == json.loads(whole.stdout)["text"] + "\n"
    assert "tok/s" in streamed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of MESSAGE"),
        (["--stream", "--json", "hi"], "--stream and --json cannot be combined"),
        (["hi"], "--model is required"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_missing_model_exit_code(tmp_path: Path) -> None:
    result = _run("--model", str(tmp_path / "nope"), "hi")
    assert result.exit_code == 11
    assert result.stderr.startswith(f"error: {tmp_path / 'nope'}: model not found")


def test_help_dry_run_and_refusals_never_import_mlx(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = f"""
import sys
from click.testing import CliRunner
from jarvis.cli import cli
runner = CliRunner()
assert runner.invoke(cli, ["--help"]).exit_code == 0
assert runner.invoke(cli, ["reply", "--dry-run", "hi"]).exit_code == 0
args = ["train", "--dataset", {str(tmp_path)!r}, "--model", "m", "--adapter-path", "a"]
assert runner.invoke(cli, args).exit_code == 6
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("mlx", "mlx_lm", "transformers"))
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_adapter_on_a_base_of_another_shape_is_refused_before_mlx_lm_loads_it(
    tmp_path: Path, trained_adapter: Path, tiny_model: Path
) -> None:
    from jarvis.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "wide", hidden=128)
    result = _run("--model", str(other), "--adapter", str(trained_adapter), "hi")
    assert result.exit_code == 8
    (line,) = result.stderr.splitlines()  # one line, never mlx-lm's parameter dump
    assert line.startswith(f"error: adapter {trained_adapter} was trained on another base model: ")
    assert str(tiny_model) in line and str(other) in line
    assert "lora_a" not in result.stderr


def test_the_adapter_names_its_contract_root_and_base(
    tmp_path: Path, tiny_model: Path, make_dataset: Any
) -> None:
    from contract_root import copy_root
    from jarvis.lock import bump_version, write_lock
    from jarvis.train import TrainOptions, train

    root = copy_root(tmp_path / "root")
    dataset = make_dataset(tmp_path / "ds", root=root)
    options = TrainOptions(iters=2, batch_size=2, learning_rate=1e-3, num_layers=2, rank=4)
    adapter = train(dataset, str(tiny_model), tmp_path / "adapter", options).adapter_path
    # Neither --root, --contract nor --model: the manifest and the stamp say where they are.
    verify = CliRunner().invoke(cli, ["verify", str(dataset), "--adapter", str(adapter)])
    assert verify.exit_code == 0, verify.output
    bump_version("reply", root)
    write_lock(root)
    result = _run("--adapter", str(adapter), "--json", "--max-tokens", "4", "you", "up?")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["contract"] == "reply@1"  # as trained, not the bumped @2
    result = _run("--root", str(root), "--contract", "reply", "--adapter", str(adapter), "hi")
    assert result.exit_code == 8
    assert "but the contract is reply@2" in result.stderr
    assert "to serve it as trained, pass --contract reply@1" in result.stderr
