"""Run every benchmark module (`benchmarks/bench_*.py`), or only those named on the command line.

`python -m benchmarks render 50000` runs the modules whose name contains `render`, passing
the numbers (record counts) on to them. Each module's `main()` measures jarvis against a
baseline in the same process and prints the ratio; timings are not asserted anywhere (speed
is measured here, not in tests).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    words = [a for a in argv if not a.isdigit()]
    numbers = [a for a in argv if a.isdigit()]
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    chosen = [n for n in names if not words or any(w in n for w in words)]
    if not chosen:
        print(f"no benchmark matches {' '.join(words)} (have: {', '.join(names)})")
        return 2
    for name in chosen:
        print(f"== {name}", flush=True)
        bench = importlib.import_module(f"benchmarks.{name}").main
        if "argv" in inspect.signature(bench).parameters:
            bench(numbers)
        else:
            bench()
    return 0


if __name__ == "__main__":
    from jarvis.blas import reexec_if_asked

    reexec_if_asked(sys.argv[1:], module="benchmarks")  # JARVIS_FAST_BLAS=1: OpenBLAS
    sys.exit(main(sys.argv[1:]))
