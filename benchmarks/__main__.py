"""Run every benchmark module (`benchmarks/bench_*.py`), or only those named on the command line.

Each module's `main()` measures jarvis against a baseline in the same process and prints
the ratio; timings are not asserted anywhere (speed is measured here, not in tests).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    chosen = [n for n in names if not argv or any(a in n for a in argv)]
    for name in chosen:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
