"""`jarvis contract list|show|lock|check` and the CLI's error mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from contract_root import add_version, copy_root
from jarvis.cli import cli
from jarvis.contract import load_contract


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_root(tmp_path / "root")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_list_shows_both_contracts_with_short_fingerprints() -> None:
    code, out, _ = run("contract", "list")
    assert code == 0
    for ref in ("codegen@1", "reply@1"):
        fp = load_contract(ref).short_fingerprint
        line = next(line for line in out.splitlines() if line.startswith(ref))
        assert line.split()[1:3] == [fp, "ok"]


def test_root_option_on_group_or_command(root: Path) -> None:
    add_version(root, "reply", 1, 2)
    for args in (
        ["--root", str(root), "contract", "list"],
        ["contract", "list", "--root", str(root)],
    ):
        code, out, _ = run(*args)
        assert code == 0
        assert "reply@2" in out and "  -  " in out  # reply@2 not locked yet


def test_show_json(root: Path) -> None:
    code, out, _ = run("contract", "show", "reply@1", "--json", "--root", str(root))
    assert code == 0
    info = json.loads(out)
    assert info["contract"] == "reply@1"
    assert info["fingerprint"] == load_contract("reply@1", root=root).fingerprint
    assert "prompts/reply/v1/system.j2" in info["parts"]


def test_check_fails_naming_the_changed_file(root: Path) -> None:
    system = root / "prompts/reply/v1/system.j2"
    system.write_text(system.read_text().replace("Rules:", "Rules;"))
    code, _, err = run("contract", "check", "--root", str(root))
    assert code == 4
    assert err.startswith(
        "error: reply@1 changed since it was locked: prompts/reply/v1/system.j2 (locked "
    )


def test_adding_v2_and_lock_passes(root: Path) -> None:
    v2 = add_version(root, "reply", 1, 2)
    (v2 / "system.j2").write_text((v2 / "system.j2").read_text() + "- Never use emoji.\n")
    assert run("contract", "check", "--root", str(root))[0] == 4
    code, out, _ = run("contract", "lock", "--root", str(root))
    assert (code, out) == (0, "locked reply@2\n")
    code, out, _ = run("contract", "check", "--root", str(root))
    assert (code, out) == (0, "ok: every contract version matches contracts.lock\n")


def test_undefined_variable_exit_code_and_message(root: Path) -> None:
    user = root / "prompts/codegen/v1/user.j2"
    user.write_text("{{ instruction }} {{ input }} {{ language }} {{ flavour }}\n")
    code, _, err = run("contract", "show", "codegen@1", "--root", str(root))
    assert code == 3
    assert err == (
        "error: prompts/codegen/v1/user.j2: variable 'flavour' is neither a field of "
        "CodegenInput nor a parameter of codegen@1\n"
    )


def test_help_lists_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert "8  adapter does not match the contract, dataset or base model" in out


def test_python_m_jarvis_help_imports_no_mlx() -> None:
    code = (
        "import runpy, sys; sys.argv = ['jarvis', '--help']\n"
        "try:\n    runpy.run_module('jarvis', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = ('mlx', 'mlx_lm', 'transformers', 'starlette', 'uvicorn', 'prometheus_client')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print('IMPORTED', bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage: jarvis" in out.stdout
    assert out.stdout.strip().endswith("IMPORTED []")


def test_bump_then_lock(root: Path) -> None:
    code, out, _ = run("contract", "bump", "reply", "--root", str(root))
    assert code == 0
    assert out.splitlines() == [
        "created reply@2 from reply@1: prompts/reply/v2/ and contracts/reply.yaml versions.2",
        "edit them, then run `jarvis contract lock` (and `jarvis diff reply@1 reply@2`)",
    ]
    assert run("contract", "lock", "--root", str(root))[1] == "locked reply@2\n"
