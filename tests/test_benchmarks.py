"""The benchmark runner works as the README writes it (timings are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_named_benchmark_with_record_counts_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "render", "300", "1000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("== bench_render_dataset\n")
    assert "ratio, one process each: " in done.stdout
    # Each --jobs 2 ratio comes with the bound the machine sets on it.
    assert done.stdout.count("bound: --jobs 1 kept ") == 2  # without, then with a tokenizer
    assert done.stdout.count("two --jobs 1 runs at once took ") == 2
    assert "; the start-up alone took " in done.stdout  # with the tokenizer, a fixed part
    assert ", in which the early process may take " in done.stdout  # and what overlaps it
    assert "peak memory, 1000 records: " in done.stdout
    assert "peak memory, 1000 records of no thread: " in done.stdout


def test_an_unknown_benchmark_name_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stdout.startswith("no benchmark matches nope (have: bench_blas, bench_cli")
