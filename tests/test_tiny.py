"""The tiny offline model: mlx-lm opens it, it has a ChatML template, builds reproducibly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis.cli import cli
from jarvis.tiny import build_tiny_model

pytestmark = pytest.mark.slow


def test_mlx_lm_loads_it(tiny_model: Path) -> None:
    from mlx_lm import load

    model, tokenizer = load(str(tiny_model))
    assert len(model.layers) == 2
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hey"}], add_generation_prompt=True
    )
    assert tokenizer.decode(ids) == "<|im_start|>user\nhey<|im_end|>\n<|im_start|>assistant\n"
    # EOS is <|endoftext|>, as in many base models: the engine must add <|im_end|> itself.
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") not in tokenizer.eos_token_ids
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 64


def test_same_seed_same_model(tiny_model: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")

    def digest(path: Path) -> str:
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(again) == digest(tiny_model)
    assert (again / "tokenizer.json").read_bytes() == (tiny_model / "tokenizer.json").read_bytes()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "m"
    runner = CliRunner()
    result = runner.invoke(cli, ["dev", "tiny-model", str(out), "--layers", "1", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {out} (llama, 1 layers, hidden 64)\n"
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    again = runner.invoke(cli, ["dev", "tiny-model", str(out)])
    assert again.exit_code == 12
    assert again.stderr == f"error: {out} exists; pass --force to replace it\n"
