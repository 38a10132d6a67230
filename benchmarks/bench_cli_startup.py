"""`jarvis --help` wall time against `python -c "import mlx_lm"`: jarvis must be faster.

The CLI imports mlx only inside the commands that run a model, so asking for help (or
rendering a dataset) never pays for mlx, transformers or mlx-lm.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

ROUNDS = 5


def _wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(args: list[str]) -> float:
    """Return the median wall time of a command over ROUNDS runs (after one warm-up)."""
    _wall(args)
    return statistics.median(_wall(args) for _ in range(ROUNDS))


def main() -> None:
    """Print both wall times and their ratio."""
    jarvis = measure([sys.executable, "-m", "jarvis", "--help"])
    mlx_lm = measure([sys.executable, "-c", "import mlx_lm"])
    print(f"jarvis --help           {jarvis * 1000:8.1f} ms")
    print(f'python -c "import mlx_lm" {mlx_lm * 1000:6.1f} ms')
    print(f"ratio: jarvis --help is {mlx_lm / jarvis:.1f}x faster than importing mlx_lm")


if __name__ == "__main__":
    main()
