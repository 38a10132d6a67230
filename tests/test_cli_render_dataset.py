"""`jarvis render-dataset` through the CLI: exit codes, exact error lines, safe writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis.cli import cli
from jarvis.contract import bundled_root

EXAMPLES = bundled_root() / "examples"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["render-dataset", *args])
    return result.exit_code, result.stdout, result.stderr


def records(n: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"messages": [{"sender": "Sam", "text": f"you up {i}?"}], "reply": f"ya {i}"})
        + "\n"
        for i in range(start, start + n)
    )


def test_bundled_examples_render_for_both_contracts(tmp_path: Path) -> None:
    code, out, err = run(
        "--contract", "reply@1", "--input", str(EXAMPLES / "reply" / "threads.jsonl"),
        "--input", f"perfect={EXAMPLES / 'reply' / 'perfect.jsonl'}", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith("reply@1 (")
    assert "perfect" in out and out.endswith(f"wrote {tmp_path / 'r'}\n")
    code, out, err = run(
        "--contract", "codegen@1", "--input", str(EXAMPLES / "codegen" / "instructions.jsonl"),
        "--input", f"perfect={EXAMPLES / 'codegen' / 'perfect.jsonl'}",
        "--out", str(tmp_path / "c"), "--min-compliant", "0.2", "-q",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["compliance"]["per_tag"]["perfect"] == 1.0
    assert min(manifest["splits"][s]["rows"] for s in ("train", "valid", "test")) >= 4


def test_malformed_line_is_named_file_colon_line(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    lines = records(40).splitlines()
    lines[16] = '{"messages": [{"sender": 7, "text": "hi"}], "reply": "yo"}'
    data.write_text("\n".join(lines) + "\n")
    code, _, err = run("--contract", "reply@1", "--input", str(data), "--out", str(tmp_path / "o"))
    assert code == 5
    assert err.splitlines()[0] == (
        f"error: {data}:17: messages[0].sender: Input should be a valid string"
    )
    assert not (tmp_path / "o").exists()


def test_empty_folder_fails_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        "--contract", "reply@1", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o")
    )
    assert code == 6
    assert err == (
        f"error: {tmp_path / 'empty'}: folder has no input files (.jsonl, .json, .jsonl.gz, "
        ".json.gz); nothing to train on\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_existing_output_needs_force(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text(records(100))
    args = ["--contract", "reply@1", "--input", str(data), "--out", str(tmp_path / "o"), "-q"]
    assert run(*args)[0] == 0
    code, _, err = run(*args)
    assert code == 12
    assert err == f"error: {tmp_path / 'o'} exists; pass --force to replace it\n"
    assert run(*args, "--force", "--seed", "2")[0] == 0


def test_option_errors(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text(records(100))
    base = ["--contract", "reply@1", "--input", str(data), "--out", str(tmp_path / "o")]
    code, _, err = run(*base, "--repeat", "perfect")
    assert (code, err) == (5, "error: --repeat 'perfect': expected TAG=N with N an integer\n")
    code, _, err = run(*base, "--split", "0.9,0.2,0.1")
    assert code == 5 and "must sum to 1" in err
    code, _, err = run("--input", str(data), "--out", str(tmp_path / "o"))
    assert code == 2 and "--contract is required" in err


def test_recipe_file_with_cli_override(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(records(100))
    (tmp_path / "recipe.yaml").write_text(
        "contract: reply@1\ninputs: [x.jsonl]\nseed: 5\nsplit: [0.8, 0.1, 0.1]\n"
    )
    code, _, err = run("--recipe", str(tmp_path / "recipe.yaml"), "--seed", "9",
                       "--out", str(tmp_path / "o"), "-q")  # fmt: skip
    assert code == 0, err
    recipe = json.loads((tmp_path / "o" / "manifest.json").read_text())["recipe"]
    assert recipe["seed"] == 9 and recipe["split"] == [0.8, 0.1, 0.1]
    assert recipe["inputs"] == [str(tmp_path / "x.jsonl")]


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_cli_does_not_import_mlx(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(records(100))
    code = (
        "import sys\nfrom jarvis.cli import cli\n"
        "try:\n    cli(['render-dataset', '--contract', 'reply@1', '--input', sys.argv[1],"
        " '--out', sys.argv[2], '-q'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert not [m for m in sys.modules if m == 'mlx' or m.startswith('mlx.')]\n"
        "assert 'mlx_lm' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.jsonl"), str(tmp_path / "o")],
        capture_output=True, text=True, env=_subprocess_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "train.jsonl").is_file()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_leaves_the_previous_output_intact(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text(records(100))
    out = tmp_path / "o"
    assert run("--contract", "reply@1", "--input", str(small), "--out", str(out), "-q")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    big = tmp_path / "big.jsonl"
    big.write_text(records(60_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jarvis", "render-dataset", "--contract", "reply@1",
         "--input", str(big), "--out", str(out), "--force", "-q"],
        env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    # Kill it once it is writing its temp folder (mid-run), not before it started.
    while not list(tmp_path.glob(".o.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "big.jsonl",
        "o",
        "small.jsonl",
    ]
