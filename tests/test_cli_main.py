"""The console-script entry point (`jarvis.cli.main`), run as a user's shell runs it."""

from __future__ import annotations

import subprocess
import sys

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
