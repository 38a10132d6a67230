"""The console-script entry point (`jarvis.cli.main`), run as a user's shell runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# An atexit handler runs after `main` returns or raises SystemExit, as the interpreter exits.
PROBE = (
    "import atexit, gc, sys; from jarvis.cli import main; "
    "atexit.register(lambda: print('frozen:', gc.get_freeze_count() > 0)); "
    "sys.argv = ['jarvis', *sys.argv[1:]]; main()"
)


@pytest.mark.parametrize(
    ("args", "code", "shown"),
    [
        (["contract", "list"], 0, "reply@1"),
        (["contract", "show", "nosuch@9"], 3, "error: no contract 'nosuch'"),
    ],
)
def test_main_leaves_the_objects_out_of_the_exit_collection(
    args: list[str], code: int, shown: str
) -> None:
    # Frozen before the interpreter's exit: its collection skips them (0.1-0.15 s after a
    # tokenizer is loaded), while the exit code, the output and atexit handlers stay.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == code, out.stderr
    assert shown in out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "frozen: True"


@pytest.mark.parametrize(
    ("args", "restarts"),
    [
        (["render-dataset", "--help"], False),
        (["--root", "ROOT", "contract", "list"], False),
        (["--root", "ROOT", "reply", "--help"], True),
        (["reply", "--help"], True),
        (["train", "--help"], True),
        (["--version"], False),  # no command: nothing loads mlx
    ],
)
def test_fast_blas_restarts_only_commands_that_may_run_mlx(
    args: list[str], restarts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Click resolves the command (the group's options and their values skipped); the
    # restart itself is recorded instead of replacing this process.
    from click.testing import CliRunner

    from jarvis import blas
    from jarvis.cli import cli

    calls: list[list[str]] = []
    monkeypatch.setattr(blas, "reexec_if_asked", lambda argv: calls.append(argv))
    monkeypatch.setenv("JARVIS_FAST_BLAS", "1")
    root = Path(__file__).resolve().parent.parent  # the project's own contract root
    args = [str(root) if a == "ROOT" else a for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert bool(calls) is restarts


def test_render_dataset_with_fast_blas_set_does_not_start_again(tmp_path: Path) -> None:
    # With the switch on and no OpenBLAS to install (offline), a restart would fail with
    # exit 11; render-dataset runs as it is.
    import json
    import os

    src = tmp_path / "in.jsonl"
    records = [{"messages": [{"sender": "Sam", "text": f"hi {i}"}], "reply": f"yo {i}"}
               for i in range(400)]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = {**os.environ, "JARVIS_FAST_BLAS": "1", "JARVIS_BLAS_DIR": str(tmp_path / "none"),
           "PIP_INDEX_URL": "http://127.0.0.1:9/", "PIP_NO_INDEX": "1"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "jarvis", "render-dataset", "--contract", "reply@1", "--input",
         str(src), "--out", str(tmp_path / "out"), "-q"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "train.jsonl").is_file()


def test_the_fast_blas_restart_does_nothing_unless_switched_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CLI calls it for every command that may load mlx; only the switch restarts.
    from jarvis import blas

    def install() -> Path:
        raise AssertionError("installed OpenBLAS without the switch")

    monkeypatch.setattr(blas, "install", install)
    monkeypatch.delenv("JARVIS_FAST_BLAS", raising=False)
    assert blas.reexec_if_asked(["reply", "--help"]) is None
    monkeypatch.setenv("JARVIS_FAST_BLAS", "0")
    assert blas.reexec_if_asked(["reply", "--help"]) is None
