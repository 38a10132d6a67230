"""`jarvis adapter show | list`: an adapter's stamp, read without mlx."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis.cli import cli
from jarvis.contract import load_contract

pytestmark = pytest.mark.slow


def test_show_prints_the_stamp(trained_adapter: Path, tiny_model: Path) -> None:
    result = CliRunner().invoke(cli, ["adapter", "show", str(trained_adapter)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"adapter: {trained_adapter}"
    assert lines[1].startswith("written: 20") and "bytes of weights" in lines[1]
    assert lines[2] == f"contract: reply@1  fingerprint {load_contract('reply@1').fingerprint}"
    assert f"base model: {tiny_model}" in lines


def test_list_finds_every_adapter_under_a_folder(trained_adapter: Path, tmp_path: Path) -> None:
    shutil.copytree(trained_adapter, tmp_path / "runs" / "a")
    shutil.copytree(trained_adapter, tmp_path / "runs" / "nested" / "b")
    (tmp_path / "runs" / "nested" / "b" / "adapter_config.json").write_text("{}")
    result = CliRunner().invoke(cli, ["adapter", "list", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ADAPTER", "CONTRACT", "FINGERPRINT", "BASE", "WRITTEN"]
    assert lines[1].split()[:3] == ["a", "reply@1", load_contract("reply@1").short_fingerprint]
    assert lines[2].split()[:2] == ["nested/b", "unstamped"]
    result = CliRunner().invoke(cli, ["adapter", "list", str(tmp_path)])
    assert len(result.stdout.splitlines()) == 3
    result = CliRunner().invoke(cli, ["adapter", "show", str(tmp_path)])
    assert result.exit_code == 11
