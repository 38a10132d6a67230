"""`make demo` end to end, as a new user runs it: every step passes and the refusal is exit 8."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_to_the_end(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "jarvis.demo"], cwd=tmp_path, capture_output=True, text=True,
        env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ok: all 8 checks passed" in done.stdout
    assert "  exit code 8" in done.stdout
    assert "demo finished in " in done.stdout
