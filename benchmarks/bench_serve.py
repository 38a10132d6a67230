"""`jarvis serve` against `mlx_lm.server` on the same model, adapter and prompts.

Both servers run as subprocesses on 127.0.0.1; 1, 4 and 16 clients each send requests in a
loop (greedy, the same rendered prompt for both: jarvis renders it from the record,
mlx_lm.server gets the same system and user messages). Prints requests/s and p50/p95
latency per level, side by side, alternating the servers and repeating each level (medians).

Tiny model (built here, with a 3-step adapter) always; SmolLM2-135M with the bench-learn
jarvis adapter when `models/smollm2-135m` and `bench-learn-out/work/jarvis-adapter` exist.
Goals (issue 12): at 16 clients >= 4x the 1-client throughput, and at least mlx_lm.server's
throughput at every level.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REAL = Path(os.environ.get("JARVIS_REAL_MODEL", ROOT / "models" / "smollm2-135m"))
REAL_ADAPTER = ROOT / "bench-learn-out" / "work" / "jarvis-adapter"
LEVELS = (1, 4, 16)
PER_CLIENT = int(os.environ.get("JARVIS_BENCH_SERVE_PER_CLIENT", "4"))
REPEATS = int(os.environ.get("JARVIS_BENCH_SERVE_REPEATS", "3"))
# SmolLM2 on 2 CPU cores decodes ~9 tokens/s: one round of each level already takes minutes.
REAL_REPEATS = int(os.environ.get("JARVIS_BENCH_SERVE_REAL_REPEATS", "1"))
SENDERS = ("Sam", "Ana", "Lee", "Priya", "Marcus", "Jess", "Ravi", "Mom")
TEXTS = ("you coming tonight?", "dinner at 7?", "where are you", "gym tmrw?",
         "happy bday!!", "can you call me", "movie later?", "coffee?")  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def _records(contract: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """`n` distinct requests (numbered from `start`): no server may answer from a cache of
    whole past prompts, as real traffic would not let it."""
    if contract.startswith("codegen"):
        tasks = ("reverses a string", "counts vowels", "sums a list", "finds the max",
                 "checks a palindrome", "merges dicts", "flattens a list", "squares")  # fmt: skip
        return [{"instruction": f"Write a Python function that {tasks[i % len(tasks)]} ({i})."}
                for i in range(start, start + n)]  # fmt: skip
    return [{"messages": [{"sender": SENDERS[i % 8], "text": f"{TEXTS[(i * 3) % 8]} {i}"}]}
            for i in range(start, start + n)]  # fmt: skip


def _load(clients: int, send: Any, bodies: list[Any]) -> tuple[float, list[float]]:
    """Run `clients` loops over their share of `bodies`; returns (seconds, latencies)."""
    latencies: list[float] = []

    def client(k: int) -> None:
        for body in bodies[k::clients]:
            t = time.perf_counter()
            send(body)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return time.perf_counter() - start, latencies


def run_pair(
    model: Path, adapter: Path, contract: str, max_tokens: int, label: str, repeats: int = REPEATS
) -> None:
    """Measure both servers on one model and adapter; print the table."""
    import httpx

    from jarvis.contract import load_contract
    from jarvis.engine import request_messages

    c = load_contract(contract)
    jport, mport = _port(), _port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    jarvis = subprocess.Popen(
        [sys.executable, "-m", "jarvis", "serve", "--adapter", str(adapter), "--model",
         str(model), "--port", str(jport), "--max-batch", "16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    mlx = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm", "server", "--model", str(model), "--adapter-path",
         str(adapter), "--port", str(mport), "--log-level", "ERROR"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{jport}/healthz", jarvis)
        _wait(f"http://127.0.0.1:{mport}/v1/models", mlx)
        session = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64))
        options = {"max_tokens": max_tokens, "temperature": 0.0}

        def jarvis_send(record: dict[str, Any]) -> None:
            body = {**record, **options, "stop": []}
            r = session.post(f"http://127.0.0.1:{jport}/v1/reply", json=body)
            r.raise_for_status()

        def mlx_send(record: dict[str, Any]) -> None:
            messages = request_messages(c, record)
            body = {"model": "default_model", "messages": messages, **options}
            r = session.post(f"http://127.0.0.1:{mport}/v1/chat/completions", json=body)
            r.raise_for_status()

        for send in (jarvis_send, mlx_send):  # warm both (first prefill, caches)
            _load(2, send, _records(contract, 4))
        table: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
        fresh = 1000
        for clients in LEVELS:
            for _ in range(repeats):  # alternate A and B: the machine is shared and noisy
                bodies = _records(contract, clients * PER_CLIENT, fresh)
                fresh += len(bodies)
                for name, send in (("jarvis", jarvis_send), ("mlx_lm", mlx_send)):
                    table.setdefault((name, clients), []).append(_load(clients, send, bodies))
    finally:
        for proc in (jarvis, mlx):
            proc.terminate()
            proc.wait(60)
    print(f"{label}: {PER_CLIENT} requests per client, max_tokens {max_tokens}, greedy; "
          f"median of {repeats}")  # fmt: skip
    print("| clients | jarvis req/s | p50 / p95 s | mlx_lm.server req/s | p50 / p95 s | ratio |")
    print("|---|---|---|---|---|---|")
    rate: dict[tuple[str, int], float] = {}
    for clients in LEVELS:
        cells = []
        for name in ("jarvis", "mlx_lm"):
            runs = table[(name, clients)]
            rps = statistics.median(len(lat) / sec for sec, lat in runs)
            lat = sorted(x for _, ls in runs for x in ls)
            rate[(name, clients)] = rps
            cells.append(f"{rps:.2f} | {lat[len(lat) // 2]:.3f} / {lat[int(len(lat) * 0.95)]:.3f}")
        ratio = rate[("jarvis", clients)] / rate[("mlx_lm", clients)]
        print(f"| {clients} | {cells[0]} | {cells[1]} | {ratio:.2f}x |")
    scale = rate[("jarvis", 16)] / rate[("jarvis", 1)]
    print(f"jarvis at 16 clients: {scale:.1f}x its 1-client throughput (goal >= 4x)")


def main() -> None:
    """The tiny model always; SmolLM2 when it and a bench-learn adapter are present."""
    from jarvis.dataset import Recipe, render_dataset
    from jarvis.tiny import build_tiny_model
    from jarvis.train import TrainOptions, train

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        base = Path(tmp)
        model = build_tiny_model(base / "tiny")
        raw = base / "in.jsonl"
        raw.write_text("".join(
            json.dumps({"messages": r["messages"], "reply": "ya sure " + str(i)}) + "\n"
            for i, r in enumerate(_records("reply@1", 24))
        ))  # fmt: skip
        recipe = Recipe.build(
            contract="reply@1", inputs=[str(raw)], split="0.6,0.2,0.2", batch_size=2
        )
        render_dataset(recipe, base / "data")
        options = TrainOptions(iters=3, batch_size=2, num_layers=2, rank=4)
        adapter = train(base / "data", str(model), base / "adapter", options).adapter_path
        run_pair(model, adapter, "reply@1", 32, "tiny model (2 layers, hidden 64)")
    if (REAL / "config.json").is_file() and (REAL_ADAPTER / "adapters.safetensors").is_file():
        label = "SmolLM2-135M + bench-learn adapter"
        run_pair(REAL, REAL_ADAPTER, "codegen@1", 32, label, REAL_REPEATS)
    else:
        print(f"SmolLM2: skipped (needs {REAL} and {REAL_ADAPTER}: make real-model bench-learn)")


if __name__ == "__main__":
    main()
