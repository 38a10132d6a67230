"""The fast BLAS on the real model: prefill and decode speed, bundled BLAS vs OpenBLAS.

Needs SmolLM2-135M-Instruct (`make real-model`, or `$JARVIS_REAL_MODEL`) on Linux; skipped
with the reason otherwise. Each side runs in its own process (a BLAS is chosen when the
process starts), alternated A/B and repeated; medians are quoted, and the two sides' logits
for the same prompt are compared.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = Path(os.environ.get("JARVIS_REAL_MODEL", "models/smollm2-135m"))
RUNS = int(os.environ.get("JARVIS_BENCH_BLAS_RUNS", "2"))

_CHILD = """
import json, sys, time
import numpy as np
import mlx.core as mx
from mlx_lm import load, stream_generate
model, tok = load(sys.argv[1])
prompt = tok.apply_chat_template(
    [{"role": "user", "content": "Write a Python function that reverses a string. " * 8}],
    add_generation_prompt=True, tokenize=False,
)
ids = tok.encode(prompt)
logits = model(mx.array([ids]))[0, -1]
mx.eval(logits)
np.save(sys.argv[2], np.array(logits))
t = time.perf_counter()
mx.eval(model(mx.array([ids])))
prefill = len(ids) / (time.perf_counter() - t)
n, t = 0, None
for r in stream_generate(model, tok, prompt, max_tokens=24):
    n += 1
    if n == 1:
        t = time.perf_counter()
decode = (n - 1) / (time.perf_counter() - t)
print(json.dumps({"prompt_tokens": len(ids), "prefill": prefill, "decode": decode}))
"""


def _run(env: dict[str, str], npy: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(MODEL), str(npy)],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Alternate the two BLAS setups, print medians, the speed-up and the logit difference."""
    if not sys.platform.startswith("linux"):
        print("skipped: the fast BLAS is for Linux CPUs")
        return
    if not (MODEL / "config.json").is_file():
        print(f"skipped: no real model at {MODEL} (run `make real-model`)")
        return
    import numpy as np

    from jarvis.blas import environment, install

    fast_env = environment(install())
    slow_env = {"LD_PRELOAD": "", "JARVIS_FAST_BLAS": "0"}
    results: dict[str, list[dict[str, float]]] = {"bundled": [], "openblas": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(RUNS):
            for name, env in (("bundled", slow_env), ("openblas", fast_env)):
                results[name].append(_run(env, Path(tmp) / f"{name}.npy"))
        diff = float(
            np.abs(np.load(Path(tmp) / "bundled.npy") - np.load(Path(tmp) / "openblas.npy")).max()
        )
    tokens = results["bundled"][0]["prompt_tokens"]
    print(f"model: {MODEL} ({tokens:.0f}-token prompt), {RUNS} runs each")
    for metric in ("prefill", "decode"):
        slow = statistics.median(r[metric] for r in results["bundled"])
        fast = statistics.median(r[metric] for r in results["openblas"])
        print(
            f"{metric:8} bundled BLAS {slow:8.1f} tok/s   OpenBLAS {fast:8.1f} tok/s   "
            f"{fast / slow:5.1f}x"
        )
    print(f"max |logit difference| on the last prompt token: {diff:.2e}")


if __name__ == "__main__":
    main()
