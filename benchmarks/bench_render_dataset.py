"""`render-dataset` against a hand-written baseline on the same synthetic input.

The baseline is what people write by hand: read JSONL, f-string the prompt, `json.dumps`,
write three files (no validation, checks, dedup, stratified split or manifest). Prints the
ratio of time per record, and the peak memory of a separate `render-dataset` process.

Sizes: `JARVIS_BENCH_N` (default 200000) records for the timing, `JARVIS_BENCH_MEM_N`
(default 1000000, 0 to skip) for the memory run; or `python -m benchmarks.bench_render_dataset
N MEM_N`.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = ("Sam", "Priya", "Marcus", "Mom", "Ravi", "Jess")
WORDS = "ya omw lol down later tonight dinner rent gym sure ok cool where when what time".split()


def make_input(path: Path, n: int, seed: int = 0) -> None:
    """Write `n` reply@1 records in threads of about 8, with a few duplicates."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            turns = rng.randint(1, 6)
            messages = [
                {
                    "sender": rng.choice(NAMES),
                    "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 12))),
                }
                for _ in range(turns)
            ]
            record = {
                "thread": f"t{i // 8}",
                "messages": messages,
                "reply": " ".join(rng.choices(WORDS, k=rng.randint(1, 9))) + f" {i}",
            }
            fh.write(json.dumps(record) + "\n")


def baseline(src: Path, out: Path, system: str) -> None:
    """The hand-written pipeline: same prompt text, no checks, 90/5/5 by position."""
    out.mkdir(parents=True, exist_ok=True)
    files = [
        (out / n).open("w", encoding="utf-8") for n in ("train.jsonl", "valid.jsonl", "test.jsonl")
    ]
    with src.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            r = json.loads(line)
            user = "\n".join(f"{m['sender']}: {m['text']}" for m in r["messages"])
            row = {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": r["reply"]},
                ]
            }
            k = i % 20
            files[0 if k < 18 else 1 if k == 18 else 2].write(json.dumps(row) + "\n")
    for f in files:
        f.close()


def _jarvis_once(src: Path, out: Path, jobs: int | str = "auto") -> None:
    from jarvis.dataset import Recipe, render_dataset

    recipe = Recipe.build(contract="reply@1", inputs=[str(src)])
    render_dataset(recipe, out, force=True, jobs=jobs)


QWEN = Path(__file__).resolve().parent.parent.parent / "shared/realdata/tokenizers/qwen2.5-instruct"


def hf_loop(src: Path, tokenizer: object, system: str) -> None:
    """The Hugging Face way: build each row's messages and `apply_chat_template(tokenize=True)`."""
    with src.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            user = "\n".join(f"{m['sender']}: {m['text']}" for m in r["messages"])
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
                {"role": "assistant", "content": r["reply"]},
            ]
            tokenizer.apply_chat_template(messages, tokenize=True)  # type: ignore[attr-defined]


def tokenizer_anchor(base: Path, n: int, system: str) -> None:
    """jarvis with the real Qwen2.5 tokenizer against the HF loop, alternated, medians of 3."""
    import statistics

    from transformers import AutoTokenizer

    from jarvis.dataset import Recipe, render_dataset

    if not QWEN.is_dir():
        print(f"tokenizer anchor: skipped (no {QWEN})")
        return
    src = base / "tok.jsonl"
    make_input(src, n, seed=2)
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN))
    recipe = Recipe.build(contract="reply@1", inputs=[str(src)], tokenizer=str(QWEN))
    hf, jv = [], []
    for _ in range(3):
        t = time.perf_counter()
        hf_loop(src, tokenizer, system)
        hf.append(time.perf_counter() - t)
        t = time.perf_counter()
        render_dataset(recipe, base / "tok-out", force=True, jobs=1)
        jv.append(time.perf_counter() - t)
    a, b = statistics.median(hf) / n * 1e6, statistics.median(jv) / n * 1e6
    head = f"with the Qwen2.5 tokenizer, {n} records, one process:"
    print(f"{head} HF apply_chat_template loop {a:.0f} us/record, render-dataset {b:.0f} "
          f"us/record: {b / a:.2f}x (goal <= 0.5x)")  # fmt: skip


def peak_memory_mb(src: Path, out: Path) -> float:
    """Run `jarvis render-dataset` in a child process and return its peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [sys.executable, "-m", "jarvis", "render-dataset", "--contract", "reply@1",
         "--input", str(src), "--out", str(out), "--force", "-q"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss is the max over finished children, in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    if peak <= before:
        print("  (peak memory not measurable: an earlier child used more)")
    return peak * scale / 1e6


def main(argv: list[str] | None = None) -> None:
    """Time both pipelines, print per-record times, the ratio and the peak memory."""
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else int(os.environ.get("JARVIS_BENCH_N", "200000"))
    mem_n = int(args[1]) if len(args) > 1 else int(os.environ.get("JARVIS_BENCH_MEM_N", "1000000"))
    from jarvis.contract import load_contract

    system = load_contract("reply@1").system_prompt
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        base = Path(tmp)
        src = base / "input.jsonl"
        make_input(src, n)
        _jarvis_once(src, base / "warm", jobs=1)  # imports and contract load are not per record
        t0 = time.perf_counter()
        baseline(src, base / "baseline", system)
        t1 = time.perf_counter()
        _jarvis_once(src, base / "jarvis1", jobs=1)
        t2 = time.perf_counter()
        _jarvis_once(src, base / "jarvis", jobs="auto")
        t3 = time.perf_counter()
        per_base = (t1 - t0) / n * 1e6
        per_one = (t2 - t1) / n * 1e6
        per_default = (t3 - t2) / n * 1e6
        cpus = os.cpu_count()
        print(f"records: {n}")
        print(f"baseline (1 process):           {t1 - t0:8.2f} s  {per_base:7.2f} us/record")
        print(f"render-dataset --jobs 1:        {t2 - t1:8.2f} s  {per_one:7.2f} us/record")
        print(
            f"render-dataset (default, {cpus} CPUs): {t3 - t2:6.2f} s  {per_default:7.2f} us/record"
        )
        print(f"ratio, one process each: {per_one / per_base:.2f}x (goal <= 1.5x)")
        print(f"ratio, default jobs:     {per_default / per_base:.2f}x")
        tokenizer_anchor(base, min(n, 10000), system)
        if mem_n:
            big = base / "big.jsonl"
            make_input(big, mem_n, seed=1)
            mb = peak_memory_mb(big, base / "mem")
            print(f"peak memory, {mem_n} records: {mb:.0f} MB (goal < 500 MB)")


if __name__ == "__main__":
    main()
