"""End to end on CPU, through the CLI: render the bundled data, train, reply, refuse, warn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import REPLY_RECORDS
from contract_root import add_version, copy_root
from jarvis.contract import bundled_root
from jarvis.engine import ReplyEngine

pytestmark = pytest.mark.slow

EXAMPLES = bundled_root() / "examples" / "reply"


def _jarvis(*args: str) -> Result:
    from jarvis.cli import cli

    return CliRunner().invoke(cli, list(args))


def _bundled_input(tmp_path: Path) -> str:
    if EXAMPLES.is_dir():
        return str(EXAMPLES)
    # Until the example data ships, the same kind of records from the test fixtures.
    path = tmp_path / "input.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in REPLY_RECORDS), encoding="utf-8")
    return str(path)


def test_render_train_reply_refuse_warn(tiny_model: Path, tmp_path: Path) -> None:
    data, adapter = tmp_path / "data", tmp_path / "adapter"
    rendered = _jarvis(
        "render-dataset", "--contract", "reply@1", "--input", _bundled_input(tmp_path),
        "--out", str(data), "--tokenizer", str(tiny_model), "--batch-size", "2",
        "--split", "0.6,0.2,0.2", "-q",
    )  # fmt: skip
    assert rendered.exit_code == 0, rendered.output

    trained = _jarvis(
        "train", "--dataset", str(data), "--model", str(tiny_model), "--adapter-path",
        str(adapter), "--iters", "3", "--batch-size", "2", "--learning-rate", "1e-3",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    stamp = json.loads((adapter / "adapter_config.json").read_text())["jarvis"]
    assert stamp["ref"] == "reply@1"

    replied = _jarvis("reply", "--model", str(tiny_model), "--adapter", str(adapter), "--json",
                      "--max-tokens", "8", "you coming tonight?")  # fmt: skip
    assert replied.exit_code == 0, replied.output
    out = json.loads(replied.stdout)
    assert out["contract"] == "reply@1" and out["adapter"] == str(adapter)
    assert out["ttft_s"] > 0 and out["checks"]

    # The same adapter under a bumped contract version is refused (exit 8).
    root = copy_root(tmp_path / "root")
    add_version(root, "reply", 1, 2)
    (root / "prompts/reply/v2/system.j2").write_text("You are {{ persona_name }}. Be brief.\n")
    refused = _jarvis("reply", "--root", str(root), "--contract", "reply@2", "--model",
                      str(tiny_model), "--adapter", str(adapter), "hi")  # fmt: skip
    assert refused.exit_code == 8
    assert refused.stderr.startswith(f"error: adapter {adapter} was trained on reply@1 (")

    # An adapter without a stamp loads, with a warning.
    plain = tmp_path / "plain"
    shutil.copytree(adapter, plain)
    config = json.loads((plain / "adapter_config.json").read_text())
    del config["jarvis"]
    (plain / "adapter_config.json").write_text(json.dumps(config))
    warned = _jarvis("reply", "--model", str(tiny_model), "--adapter", str(plain),
                     "--max-tokens", "2", "hi")  # fmt: skip
    assert warned.exit_code == 0, warned.output
    assert warned.stderr.startswith(f"warning: adapter {plain} has no jarvis stamp")

    # The library engine agrees with the CLI on the same adapter.
    engine = ReplyEngine(tiny_model, adapter)
    assert engine.stamp == stamp
