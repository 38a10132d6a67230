"""Hostile requests and adapters for reply and verify: refused early and clearly, never a crash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis.cli import cli
from jarvis.errors import PromptTooLongError

pytestmark = pytest.mark.slow


def invoke(*args: str, input: bytes | str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_request_is_validated_before_the_model_loads(tmp_path: Path) -> None:
    # No such model: had the model been loaded first, this would be exit 11.
    start = time.monotonic()
    code, _, err = invoke(
        "reply", "--model", str(tmp_path / "nope"), "--conversation", "-",
        input='[{"sender": "", "text": "hi"}]',
    )  # fmt: skip
    assert code == 5
    assert err == "error: messages[0].sender: String should have at least 1 character\n"
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe\x00binary\x80", "error: <stdin>: not UTF-8: invalid start byte at byte 0\n"),
        (b"Sam: caf\xe9?", "error: <stdin>: not UTF-8: invalid continuation byte at byte 8\n"),
    ],
)
def test_binary_stdin_is_refused(data: bytes, message: str) -> None:
    for extra in ([], ["--dry-run"]):
        code, _, err = invoke("reply", "-", *extra, input=data)
        assert (code, err) == (5, message)


def test_binary_and_deeply_nested_conversation_files(tmp_path: Path) -> None:
    binary = tmp_path / "c.bin"
    binary.write_bytes(b"\x00\x01\xfa\xfb")
    code, _, err = invoke("reply", "--dry-run", "--conversation", str(binary))
    assert (code, err) == (5, f"error: {binary}: not UTF-8: invalid start byte at byte 2\n")
    nested = tmp_path / "c.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = invoke("reply", "--dry-run", "--conversation", str(nested))
    assert code == 5 and err.startswith("error: invalid JSON request: ")
    surrogate = tmp_path / "s.json"
    surrogate.write_text('[{"sender": "Sam", "text": "\\udc80"}]')
    code, _, err = invoke("reply", "--dry-run", "--conversation", str(surrogate))
    assert code == 5 and err.startswith("error: invalid JSON request: ")


@pytest.mark.skipif(sys.platform == "win32", reason="bytes argv")
def test_latin1_argv_is_refused_before_the_tokenizer(tmp_path: Path, tiny_model: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LC_ALL": "C.UTF-8"}
    for extra in ([b"--dry-run"], [b"--model", os.fsencode(tiny_model)]):
        done = subprocess.run(
            [sys.executable.encode(), b"-m", b"jarvis", b"reply", *extra, b"caf\xe9 tonight?"],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        err = done.stderr.decode()
        assert done.returncode == 5, err
        assert err == "error: the message is not UTF-8 text (undecodable byte at character 3)\n"


def test_a_prompt_longer_than_the_context_is_refused_before_prefill(tiny_model: Path) -> None:
    from jarvis.engine import ReplyEngine

    engine = ReplyEngine(tiny_model, contract="reply@1")
    assert engine.context_length == 8192
    long = " ".join(f"w{i}" for i in range(20_000))
    start = time.monotonic()
    with pytest.raises(PromptTooLongError, match=r"the prompt has [\d,]+ tokens; the model's"):
        engine.reply([{"sender": "Sam", "text": long}], max_tokens=16)
    assert time.monotonic() - start < 10
    # At the edge: the prompt fits, but not with room for max_tokens.
    n = len(engine.prompt_tokens([{"sender": "Sam", "text": "hi"}]))
    with pytest.raises(PromptTooLongError, match="a prompt may have at most 1"):
        engine.reply([{"sender": "Sam", "text": "hi"}], max_tokens=8191)
    assert engine.reply([{"sender": "Sam", "text": "hi"}], max_tokens=8192 - n).text is not None


def test_cli_prompt_too_long_exit_code(tmp_path: Path, tiny_model: Path) -> None:
    request = tmp_path / "long.txt"
    request.write_text(" ".join(f"w{i}" for i in range(20_000)))
    code, _, err = invoke("reply", "--model", str(tiny_model), "--conversation", str(request))
    assert code == 7
    assert err.startswith("error: the prompt has ") and "at most" in err


def _poison(src: Path, dest: Path, value: float) -> Path:
    import mlx.core as mx

    shutil.copytree(src, dest)
    path = dest / "adapters.safetensors"
    weights = mx.load(str(path))
    name = sorted(weights)[0]
    weights[name] = mx.full(weights[name].shape, value, dtype=weights[name].dtype)
    mx.save_safetensors(str(path), weights)
    return dest


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_adapter_weights_are_refused(
    tmp_path: Path, tiny_model: Path, trained_adapter: Path, reply_dataset: Path, value: float
) -> None:
    bad = _poison(trained_adapter, tmp_path / "bad", value)
    code, _, err = invoke("reply", "--model", str(tiny_model), "--adapter", str(bad), "hi")
    assert code == 11
    assert err.startswith(f"error: {bad / 'adapters.safetensors'}: non-finite weights (NaN or Inf)")
    code, out, _ = invoke("verify", str(reply_dataset), "--adapter", str(bad))
    assert code == 1
    assert "FAIL adapter-weights: " in out
    code, out, _ = invoke("verify", str(reply_dataset), "--adapter", str(trained_adapter))
    assert "PASS adapter-weights: every adapter tensor is finite" in out


def test_bfloat16_non_finite_weights_are_found(tmp_path: Path) -> None:
    import mlx.core as mx

    from jarvis.adapter import nonfinite_tensors

    path = tmp_path / "w.safetensors"
    good = mx.ones((4, 4), dtype=mx.bfloat16)
    mx.save_safetensors(
        str(path),
        {"a": good, "b": mx.array([1.0, float("nan")], dtype=mx.bfloat16), "c": good * 2},
    )
    assert nonfinite_tensors(path) == ["b"]


def test_a_damaged_stamp_is_a_mismatch_not_an_unstamped_adapter(
    tmp_path: Path, tiny_model: Path, trained_adapter: Path
) -> None:
    import json

    bad = tmp_path / "bad"
    shutil.copytree(trained_adapter, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config["jarvis"] = 5
    (bad / "adapter_config.json").write_text(json.dumps(config))
    code, _, err = invoke("reply", "--model", str(tiny_model), "--adapter", str(bad), "hi")
    assert code == 8
    assert err == (
        f"error: adapter {bad}: adapter_config.json: the 'jarvis' stamp is not a mapping (int); "
        "retrain the adapter with `jarvis train`\n"
    )


def test_an_uncached_hub_id_fails_at_once_offline(tmp_path: Path, reply_dataset: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    expected = (
        "error: some-org/some-model: model not found in the local hub cache, and HF_HUB_OFFLINE "
        "is set; download it once online (`hf download some-org/some-model`), or pass a model "
        "folder\n"
    )
    for args in (
        ["reply", "--model", "some-org/some-model", "hi"],
        ["train", "--dataset", str(reply_dataset), "--model", "some-org/some-model",
         "--adapter", str(tmp_path / "a"), "--batch-size", "2"],
        ["render-dataset", "--contract", "reply@1", "--input", str(tmp_path / "x.jsonl"),
         "--tokenizer", "some-org/some-model", "--out", str(tmp_path / "o")],
    ):  # fmt: skip
        (tmp_path / "x.jsonl").write_text('{"messages": [{"sender": "a", "text": "b"}]}\n')
        start = time.monotonic()
        code, _, err = invoke(*args)
        assert time.monotonic() - start < 5, args
        assert (code, err) == (11, expected), args
