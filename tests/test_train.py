"""`jarvis train` / `train-config`: dataset refusals before any model loads, the stamp, NaN."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from jarvis.adapter import chat_template_sha256, check_adapter, read_stamp, weights_sha256
from jarvis.chat import load_tokenizer
from jarvis.cli import cli
from jarvis.contract import load_contract
from jarvis.errors import (
    ContractMismatchError,
    DatasetError,
    ModelError,
    TokenizationError,
    TrainingError,
)
from jarvis.train import TrainOptions, load_dataset, train, train_configs

pytestmark = pytest.mark.slow

NO_MODEL = "/nonexistent/model"  # a refusal must come before the model is even looked at


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _bad_manifest(src: Path, dest: Path, fingerprint: str) -> Path:
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["contract"]["fingerprint"] = fingerprint
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_stamp_and_config(trained_adapter: Path, reply_dataset: Path, tiny_model: Path) -> None:
    config = json.loads((trained_adapter / "adapter_config.json").read_text())
    contract = load_contract("reply@1")
    stamp = config["jarvis"]
    assert stamp["contract"] == "reply" and stamp["version"] == 1 and stamp["ref"] == "reply@1"
    assert stamp["fingerprint"] == contract.fingerprint
    manifest_sha = hashlib.sha256((reply_dataset / "manifest.json").read_bytes()).hexdigest()
    assert stamp["dataset_manifest_sha256"] == manifest_sha
    assert stamp["base_model"] == str(tiny_model)
    assert stamp["chat_template_sha256"] == chat_template_sha256(load_tokenizer(tiny_model))
    assert stamp["enable_thinking"] is False
    assert stamp["base_model_weights_sha256"] == weights_sha256(tiny_model)
    assert config["lora_parameters"] == {"rank": 4, "scale": 20.0, "dropout": 0.0}
    assert config["adapter_path"] == str(trained_adapter)
    assert config["data"] == str(reply_dataset)
    assert config["mask_prompt"] is True and config["num_layers"] == 2
    assert (trained_adapter / "adapters.safetensors").is_file()
    assert "mlx_lm.lora" in (trained_adapter / "train.log").read_text()


@pytest.mark.parametrize("case", ["missing", "empty", "no-manifest"])
def test_refuses_bad_dataset_before_loading_a_model(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "data"
    if case != "missing":
        folder.mkdir()
    if case == "no-manifest":
        (folder / "train.jsonl").write_text('{"messages": []}\n')
    with pytest.raises(DatasetError):
        train(folder, NO_MODEL, tmp_path / "adapter")
    result = _run(
        "train",
        "--dataset",
        str(folder),
        "--model",
        NO_MODEL,
        "--adapter-path",
        str(tmp_path / "a"),
    )
    assert result.exit_code == 6, result.output  # type: ignore[attr-defined]
    assert result.stderr.startswith(f"error: {folder}")  # type: ignore[attr-defined]
    assert not (tmp_path / "a").exists()


def test_cli_empty_folder_message(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _run(
        "train", "--dataset", str(tmp_path / "empty"), "--model", NO_MODEL, "--adapter-path", "x"
    )
    assert result.exit_code == 6  # type: ignore[attr-defined]
    assert result.stderr == (  # type: ignore[attr-defined]
        f"error: {tmp_path / 'empty'}: the dataset folder is empty; run `jarvis render-dataset`\n"
    )


def test_refuses_fingerprint_mismatch(reply_dataset: Path, tmp_path: Path) -> None:
    bad = _bad_manifest(reply_dataset, tmp_path / "stale", "f" * 64)
    fingerprint = load_contract("reply@1").short_fingerprint
    with pytest.raises(ContractMismatchError) as info:
        train(bad, NO_MODEL, tmp_path / "adapter")
    assert str(info.value) == (
        f"{bad} was rendered with reply@1 (fingerprint ffffffffffff) but the contract is "
        f"reply@1 (fingerprint {fingerprint}); re-render it with `jarvis render-dataset`"
    )
    result = _run("train", "--dataset", str(bad), "--model", NO_MODEL, "--adapter-path", "x")
    assert result.exit_code == 8  # type: ignore[attr-defined]


def test_refuses_a_changed_file_and_a_small_dataset(reply_dataset: Path, tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(reply_dataset, edited)
    with (edited / "train.jsonl").open("a") as fh:
        fh.write('{"messages": []}\n')
    with pytest.raises(DatasetError, match="changed since it was rendered"):
        load_dataset(edited)
    with pytest.raises(DatasetError, match="fewer than --batch-size 16"):
        train(reply_dataset, NO_MODEL, tmp_path / "a", TrainOptions(batch_size=16))


def test_refuses_rows_longer_than_max_seq_length_before_loading(
    tiny_model: Path, tmp_path: Path
) -> None:
    # Regression: a dataset rendered (and measured) with --tokenizer and a larger
    # --max-seq-length trained with a smaller one; mlx-lm silently cut the long rows.
    from jarvis.dataset import Recipe, render_dataset

    records = [
        {"messages": [{"sender": "Sam", "text": f"you around at {i}?"}], "reply": f"ya at {i}"}
        for i in range(12)
    ]
    raw = tmp_path / "in.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    recipe = Recipe.build(
        contract="reply@1",
        inputs=[str(raw)],
        split=(0.6, 0.2, 0.2),
        batch_size=2,
        tokenizer=str(tiny_model),
    )
    manifest = render_dataset(recipe, tmp_path / "data")
    longest = max(s["tokens"]["max"] for s in manifest["splits"].values())
    short = TrainOptions(batch_size=2, max_seq_length=longest - 1)
    with pytest.raises(TokenizationError, match=f"longest row has {longest} tokens"):
        train(tmp_path / "data", NO_MODEL, tmp_path / "a", short)
    with pytest.raises(TokenizationError):
        train_configs([tmp_path / "data"], [NO_MODEL], tmp_path / "a", short)
    result = _run(
        "train", "--dataset", str(tmp_path / "data"), "--model", NO_MODEL,
        "--adapter-path", str(tmp_path / "a"), "--batch-size", "2",
        "--max-seq-length", str(longest - 1),
    )  # fmt: skip
    assert result.exit_code == 7, result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "a").exists()
    # Long enough: the check passes and only the (missing) model stops it.
    with pytest.raises(ModelError, match="model not found"):
        train(tmp_path / "data", NO_MODEL, tmp_path / "a", TrainOptions(batch_size=2))


def test_nan_loss_stops_and_saves_nothing(
    reply_dataset: Path, tiny_model: Path, tmp_path: Path
) -> None:
    # An absurd learning rate blows the weights up: the loss becomes NaN within a few steps.
    options = TrainOptions(iters=20, batch_size=2, num_layers=1, learning_rate=1e30)
    options = TrainOptions(**{**options.__dict__, "steps_per_report": 1})
    with pytest.raises(
        TrainingError, match=r"loss is nan at iteration \d+; stopped, no adapter was saved"
    ):
        train(reply_dataset, str(tiny_model), tmp_path / "adapter", options)
    assert not (tmp_path / "adapter").exists()
    assert list(tmp_path.iterdir()) == []


def test_rows_over_max_seq_length_are_refused_before_training_without_token_stats(
    reply_dataset: Path, tiny_model: Path, tmp_path: Path
) -> None:
    # reply_dataset was rendered without --tokenizer: train measures every row itself.
    assert "tokens" not in load_dataset(reply_dataset).manifest["splits"]["train"]
    options = TrainOptions(iters=2, batch_size=2, num_layers=1, max_seq_length=16)
    with pytest.raises(TokenizationError) as err:
        train(reply_dataset, str(tiny_model), tmp_path / "adapter", options)
    assert str(err.value).startswith(f"{reply_dataset / 'train.jsonl'}:1: row has ")
    assert "more than --max-seq-length 16; mlx-lm would silently cut" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_adapter_needs_force(
    reply_dataset: Path, tiny_model: Path, trained_adapter: Path
) -> None:
    result = _run(
        "train", "--dataset", str(reply_dataset), "--model", str(tiny_model),
        "--adapter-path", str(trained_adapter), "--batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 12  # type: ignore[attr-defined]


def test_cli_train(reply_dataset: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = _run(
        "train", "--dataset", str(reply_dataset), "--model", str(tiny_model),
        "--adapter-path", str(out), "--iters", "2", "--batch-size", "2", "--num-layers", "1",
        "--fine-tune-type", "dora", "--no-mask-prompt", "--seed", "1", "--learning-rate", "1e-4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "iter 2: train loss" in result.output  # type: ignore[attr-defined]
    assert f"adapter: {out}" in result.output  # type: ignore[attr-defined]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "dora" and config["mask_prompt"] is False
    assert config["seed"] == 1 and config["num_layers"] == 1
    assert read_stamp(out) == config["jarvis"]


def test_train_config_single_to_stdout(reply_dataset: Path, tiny_model: Path) -> None:
    result = _run(
        "train-config", "--dataset", str(reply_dataset), "--model", str(tiny_model),
        "--adapter-path", "adapters/a", "--iters", "3", "--batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    config = yaml.safe_load(result.stdout)  # type: ignore[attr-defined]
    assert config["train"] is True and config["iters"] == 3
    assert config["data"] == str(reply_dataset)
    assert Path(config["adapter_path"]).is_absolute()
    assert config["lora_parameters"] == {"rank": 8, "scale": 20.0, "dropout": 0.0}
    assert config["num_layers"] == 2  # all layers of the tiny model, not mlx-lm's 16
    assert config["jarvis"]["fingerprint"] == load_contract("reply@1").fingerprint


def test_train_config_runs_under_mlx_lm_and_stamps(
    reply_dataset: Path, tiny_model: Path, tmp_path: Path
) -> None:
    (config,) = train_configs(
        [reply_dataset],
        [str(tiny_model)],
        tmp_path / "adapter",
        TrainOptions(iters=1, batch_size=2),
    )
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    subprocess.run(
        [sys.executable, "-m", "mlx_lm", "lora", "-c", str(path)],
        check=True,
        capture_output=True,
    )
    stamp = read_stamp(tmp_path / "adapter")
    assert stamp is not None and stamp["ref"] == "reply@1"

    assert (
        check_adapter(tmp_path / "adapter", load_contract("reply@1"), base_model=tiny_model) == []
    )


def test_train_config_matrix(
    reply_dataset: Path,
    tiny_model: Path,
    tmp_path: Path,
    make_dataset: Callable[..., Path],
) -> None:
    variant = make_dataset(tmp_path / "variant")
    out = tmp_path / "configs"
    args = ["train-config", "--model", str(tiny_model), "--model", "org/other-model"]
    args += ["--dataset", str(reply_dataset), "--dataset", str(variant)]
    args += ["--adapter-path", str(tmp_path / "adapters"), "--out", str(out), "--batch-size", "2"]
    result = _run(*args)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "model_reply.yaml",
        "model_variant.yaml",
        "other-model_reply.yaml",
        "other-model_variant.yaml",
    ]
    hub = yaml.safe_load((out / "other-model_variant.yaml").read_text())
    assert hub["model"] == "org/other-model"
    assert hub["adapter_path"] == str(tmp_path / "adapters" / "other-model_variant")
    assert hub["jarvis"]["chat_template_sha256"] is None  # not in the local cache

    (tmp_path / "empty").mkdir()
    args[args.index(str(variant))] = str(tmp_path / "empty")
    shutil.rmtree(out)
    result = _run(*args)
    assert result.exit_code == 6  # type: ignore[attr-defined]
    assert not out.exists()  # the post-mortem's empty variant: nothing written at all


def test_cli_refusal_prints_no_training_line(reply_dataset: Path, tmp_path: Path) -> None:
    result: Any = _run(
        "train", "--dataset", str(reply_dataset), "--model", NO_MODEL,
        "--adapter-path", str(tmp_path / "a"), "--batch-size", "64",
    )  # fmt: skip
    assert result.exit_code == 6
    assert "training " not in result.stdout
    assert result.stderr.startswith("error: ") and "fewer than --batch-size 64" in result.stderr


def test_train_config_force_replaces_only_its_own_files(
    reply_dataset: Path, tiny_model: Path, tmp_path: Path, make_dataset: Callable[..., Path]
) -> None:
    out = tmp_path / "run.yaml"
    out.write_text("my: own\nnotes: keep\n")
    args = ["train-config", "--model", str(tiny_model), "--dataset", str(reply_dataset)]
    args += ["--adapter-path", str(tmp_path / "a"), "--out", str(out), "--batch-size", "2"]
    result: Any = _run(*args)
    assert (
        result.exit_code == 12
        and result.stderr == f"error: {out} exists; pass --force to replace it\n"
    )
    result = _run(*args, "--force")
    assert result.exit_code == 12
    assert result.stderr.startswith(f"error: {out}: --force replaces only a config")
    assert out.read_text() == "my: own\nnotes: keep\n"
    out.unlink()
    assert _run(*args).exit_code == 0  # type: ignore[attr-defined]
    assert _run(*args, "--force").exit_code == 0  # type: ignore[attr-defined]
    # Two dataset folders of one name would write one file twice: refused, nothing written.
    (tmp_path / "other").mkdir()
    twin = make_dataset(tmp_path / "other" / reply_dataset.name)
    matrix = ["train-config", "--model", str(tiny_model), "--dataset", str(reply_dataset)]
    matrix += ["--dataset", str(twin), "--model", "org/x", "--batch-size", "2"]
    matrix += ["--adapter-path", str(tmp_path / "ad"), "--out", str(tmp_path / "cfg")]
    result = _run(*matrix)
    assert result.exit_code == 12
    assert "their folders share a name" in result.stderr
    assert not (tmp_path / "cfg").exists()


def test_same_seed_and_data_give_a_byte_identical_adapter(
    tiny_model: Path, reply_dataset: Path, tmp_path: Path
) -> None:
    options = TrainOptions(iters=6, batch_size=2, learning_rate=1e-3, num_layers=2, rank=4)
    digests, losses = [], []
    for run in range(3):
        result = train(reply_dataset, str(tiny_model), tmp_path / f"a{run}", options)
        digests.append(hashlib.sha256((result.adapter_path / "adapters.safetensors").read_bytes()))
        losses.append(result.losses)
    assert len({d.hexdigest() for d in digests}) == 1
    assert losses[0] == losses[1] == losses[2]
    other = train(
        reply_dataset,
        str(tiny_model),
        tmp_path / "b",
        TrainOptions(**{**options.__dict__, "seed": 1}),
    )
    other_digest = hashlib.sha256((other.adapter_path / "adapters.safetensors").read_bytes())
    assert other_digest.hexdigest() != digests[0].hexdigest()


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminal")
def test_train_shows_a_progress_bar_on_a_terminal(
    reply_dataset: Path, tiny_model: Path, tmp_path: Path
) -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jarvis", "train", "--dataset", str(reply_dataset),
         "--model", str(tiny_model), "--adapter", str(tmp_path / "a"), "--iters", "20",
         "--batch-size", "2", "--num-layers", "1"],
        stdout=subprocess.PIPE, stderr=follower, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    assert "training" in screen and "validating" in screen
    assert "20/20" in screen and "train loss " in screen and "val loss " in screen
    assert "iter 10:" not in out.decode()  # the bar replaces the per-report lines
