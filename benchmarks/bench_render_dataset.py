"""`render-dataset` against a hand-written baseline on the same synthetic input.

The baseline is what people write by hand: read JSONL, f-string the prompt, `json.dumps`,
write three files (no validation, checks, dedup, stratified split or manifest). Prints the
ratio of time per record, 2 processes against 1 (CLI runs, each a fresh process), the
tokenizer path against the Hugging Face `apply_chat_template(tokenize=True)` loop, and the
peak memory of a separate process. The machine is shared and noisy: runs alternate, the
order reversed every other round (A B C, C B A, ...), dirty pages are written out before each,
and a ratio is the median of the rounds' ratios, printed with their range.

Sizes: `JARVIS_BENCH_N` (default 200000) records for the timing, `JARVIS_BENCH_MEM_N`
(default 1000000, 0 to skip) for the memory run; or `python -m benchmarks.bench_render_dataset
N MEM_N`. The tokenizer rows take at most 60,000 records against the HF loop, and 60,000 and
150,000 for 2 processes against 1.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAMES = ("Sam", "Priya", "Marcus", "Mom", "Ravi", "Jess")
WORDS = "ya omw lol down later tonight dinner rent gym sure ok cool where when what time".split()


def make_input(path: Path, n: int, seed: int = 0, *, threads: bool = True) -> None:
    """Write `n` reply@1 records in threads of about 8 (else each a split unit of its own),
    with a few duplicates."""
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
            if not threads:
                del record["thread"]
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


def _jarvis_once(
    src: Path, out: Path, jobs: int | str = "auto", tokenizer: str | None = None
) -> float:
    """One `render_dataset` run (tokenizer load included); returns its seconds."""
    from jarvis.dataset import Recipe, render_dataset

    recipe = Recipe.build(contract="reply@1", inputs=[str(src)], tokenizer=tokenizer)
    t = time.perf_counter()
    render_dataset(recipe, out, force=True, jobs=jobs)
    return time.perf_counter() - t


def _cli(src: Path, out: Path, jobs: int | None = None, tokenizer: str | None = None) -> list[str]:
    """The `jarvis render-dataset` command line (jobs None: the CLI's default, auto)."""
    cmd = [sys.executable, "-m", "jarvis", "render-dataset", "--contract", "reply@1",
           "--input", str(src), "--out", str(out), "--force", "-q"]  # fmt: skip
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    if tokenizer is not None:
        cmd += ["--tokenizer", tokenizer]
    return cmd


def _cli_once(
    src: Path, out: Path, jobs: int | None = None, tokenizer: str | None = None
) -> tuple[float, float]:
    """One `jarvis render-dataset` CLI run in a fresh process, as users run `--jobs`
    (interpreter start and imports included); returns its seconds and the CPU seconds it
    used, its workers' and threads' included."""
    cmd = _cli(src, out, jobs, tokenizer)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    return wall, _cpu_since(before)


def _both_once(src: Path, base: Path, tokenizer: str | None = None) -> tuple[float, float]:
    """Two `--jobs 1` CLI runs of the whole input at once: what running two processes
    costs on this machine beyond twice the work (caches, memory, neighbours)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    runs = [
        subprocess.Popen(_cli(src, base / f"both{i}", 1, tokenizer), stdout=subprocess.DEVNULL)
        for i in (1, 2)
    ]
    if any(p.wait() for p in runs):
        raise subprocess.CalledProcessError(1, "render-dataset")
    return time.perf_counter() - t, _cpu_since(before)


def _cpu_since(before: resource.struct_rusage) -> float:
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(getattr(after, f) - getattr(before, f) for f in ("ru_utime", "ru_stime"))


QWEN = Path(__file__).resolve().parent.parent.parent / "shared/realdata/tokenizers/qwen2.5-instruct"


def hf_loop(src: Path, tokenizer_path: str, system: str) -> float:
    """The Hugging Face way, as a script: load the tokenizer, then per record build the
    messages and `apply_chat_template(tokenize=True)`. Returns its seconds."""
    from transformers import AutoTokenizer

    t = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    with src.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            user = "\n".join(f"{m['sender']}: {m['text']}" for m in r["messages"])
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
                {"role": "assistant", "content": r["reply"]},
            ]
            tokenizer.apply_chat_template(messages, tokenize=True)
    return time.perf_counter() - t


def _tokenizer(base: Path) -> tuple[str, str]:
    """The real Qwen2.5 tokenizer when `../shared` has it, else the tiny model's own (a real
    byte-level BPE tokenizer with a ChatML template, built offline)."""
    if QWEN.is_dir():
        return str(QWEN), "the Qwen2.5 tokenizer"
    from jarvis.tiny import build_tiny_model

    folder = base / "tiny-model"
    if not folder.exists():
        build_tiny_model(folder)
    return str(folder), "the bundled tiny tokenizer (no ../shared)"


ROUNDS = 5


@dataclass
class Rounds:
    """Seconds of each function in each round, from `alternate` (and the CPU seconds of
    those that report them)."""

    runs: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def median(self, name: str) -> float:
        """Median seconds of `name` over the rounds."""
        return statistics.median(self.runs[name])

    def ratio(self, a: str, b: str) -> tuple[float, float, float]:
        """`a` / `b`: the median of the per-round ratios (the two ran minutes apart at
        most, so a slow moment of the machine weighs on both), with its lowest and
        highest."""
        each = [x / y for x, y in zip(self.runs[a], self.runs[b], strict=True)]
        return statistics.median(each), min(each), max(each)

    def cores(self, name: str) -> float:
        """CPUs `name` kept busy: the median of its rounds' CPU seconds over seconds."""
        return statistics.median(
            c / w for c, w in zip(self.cpu[name], self.runs[name], strict=True)
        )


def alternate(fns: dict[str, Callable[[], Any]], repeats: int = ROUNDS) -> Rounds:
    """Run each function in turn, `repeats` rounds, the order reversed every other round
    (A B, B A, ...: no function always runs after the same one), with the page cache's
    dirty pages written out before each run (a run's megabytes of output would otherwise
    be flushed during whichever run comes 30 s later). A function returns its seconds, or
    (seconds, CPU seconds)."""
    runs: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {}
    for r in range(repeats):
        for name, fn in list(fns.items())[:: -1 if r % 2 else 1]:
            os.sync()
            got = fn()
            if isinstance(got, tuple):
                got, used = got
                cpu.setdefault(name, []).append(used)
            runs[name].append(got)
    return Rounds(runs, cpu)


def _floor_text(
    runs: Rounds, one: str, both: str | None = None, start: str | None = None,
    plain: tuple[str, str] | None = None,
) -> str:  # fmt: skip
    """What bounds `--jobs 2` / `--jobs 1` here: 2 processes have 2 CPUs, and `--jobs 1`
    already keeps `cores` of them busy (the fast tokenizer's own threads); two processes at
    once may each run slower than one alone (`both`: two whole runs at once / one); and
    the start-up (`start`: a run of a few records: interpreter, imports, tokenizer load)
    comes before any record is counted, in both. `plain`: the same two runs without the
    tokenizer, whose difference is the records' work but the token count, which the early
    process (`jarvis.dataset.early`) may do while the tokenizer loads (the rest of the
    start-up)."""
    cores = runs.cores(one)
    text = f"--jobs 1 kept {cores:.2f} CPUs busy, so 2 CPUs allow >= {cores / 2:.2f}x"
    crowd = 1.0
    if both is not None:
        crowd = runs.ratio(both, one)[0]
        text += f"; two --jobs 1 runs at once took {crowd:.2f}x one alone (-> ~{crowd / 2:.2f}x)"
    if start is not None:
        fixed, whole = runs.median(start), runs.median(one)
        early = 0.0
        if plain is not None:
            bare = runs.median(plain[1])
            early = min(runs.median(plain[0]) - bare, fixed - bare)
        bound = (fixed + (whole - fixed - early) * crowd / 2) / whole
        text += f"; the start-up alone took {fixed:.2f} s of its {whole:.2f} s"
        if plain is not None:
            text += f", in which the early process may take {early:.2f} s of the records' work"
        text += f" (-> with the rest halved{' at that crowding' if both else ''}, ~{bound:.2f}x)"
    return text


def _ratio_text(ratio: tuple[float, float, float]) -> str:
    mid, lo, hi = ratio
    return f"{mid:.2f}x (rounds {lo:.2f}-{hi:.2f})"


def tokenizer_anchor(
    base: Path, n: int, system: str, pair_sizes: tuple[int, ...], few: Path
) -> None:
    """jarvis with a real tokenizer against the HF loop, then 2 processes against 1 at each
    of `pair_sizes` (the fixed part, start-up and two tokenizer loads, weighs less as the
    input grows; `few`: a run of a few records times it)."""
    path, name = _tokenizer(base)
    src = base / "tok.jsonl"
    make_input(src, n, seed=2)
    _jarvis_once(src, base / "tok-warm", jobs=1, tokenizer=path)
    runs = alternate(
        {
            "hf": lambda: hf_loop(src, path, system),
            "one": lambda: _jarvis_once(src, base / "tok-1", jobs=1, tokenizer=path),
        }
    )
    hf, one = (runs.median(k) / n * 1e6 for k in ("hf", "one"))
    threads = os.environ.get("TOKENIZERS_PARALLELISM", "unset: its own threads")
    print(f"with {name}, {n} records (tokenizer load included on both sides), {ROUNDS} rounds,")
    print(f"TOKENIZERS_PARALLELISM={threads} (`make bench` sets false):")
    print(f"  {'HF apply_chat_template(tokenize=True) loop':43s} {hf:7.1f} us/record")
    print(f"  {'render-dataset --jobs 1':43s} {one:7.1f} us/record")
    print(f"  ratio: {_ratio_text(runs.ratio('one', 'hf'))} (goal <= 0.5x)")
    for size in pair_sizes:
        pair = src if size == n else base / f"tok{size}.jsonl"
        if pair != src:
            make_input(pair, size, seed=3)
        runs = alternate(
            {
                "cli1": lambda p=pair: _cli_once(p, base / "tok-c1", jobs=1, tokenizer=path),
                "cli2": lambda p=pair: _cli_once(p, base / "tok-c2", jobs=2, tokenizer=path),
                "both": lambda p=pair: _both_once(p, base, tokenizer=path),
                "start": lambda: _cli_once(few, base / "tok-few", jobs=1, tokenizer=path),
                "plain": lambda p=pair: _cli_once(p, base / "tok-p1", jobs=1),
                "bare": lambda: _cli_once(few, base / "tok-p0", jobs=1),
            }
        )
        cli1, cli2 = (runs.median(k) / size * 1e6 for k in ("cli1", "cli2"))
        print(f"  {size} records, CLI runs (a fresh process each), {ROUNDS} rounds:")
        print(f"    {'--jobs 1':41s} {cli1:7.1f} us/record")
        print(f"    {'--jobs 2':41s} {cli2:7.1f} us/record")
        print(f"    ratio: {_ratio_text(runs.ratio('cli2', 'cli1'))} (goal <= 0.6x)")
        print(f"    bound: {_floor_text(runs, 'cli1', 'both', 'start', ('plain', 'bare'))}")


# Started from this (large) process, a child's ru_maxrss would count this process's pages
# it shares between fork and exec; a small launcher forks the measured run instead and
# reports its usage alone (wait4: that child and the workers it reaped).
_LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_memory_mb(src: Path, out: Path) -> float:
    """Run `jarvis render-dataset` in a child process and return the peak RSS, in MB, of
    the largest process in its tree (its workers included)."""
    cmd = _cli(src, out)
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, check=True
    )
    code, maxrss = (int(x) for x in done.stdout.split())
    if code:
        raise subprocess.CalledProcessError(code, cmd)
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    return maxrss * (1 if sys.platform == "darwin" else 1024) / 1e6


def main(argv: list[str] | None = None) -> None:
    """Time both pipelines, print per-record times, the ratios and the peak memory."""
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else int(os.environ.get("JARVIS_BENCH_N", "200000"))
    mem_n = int(args[1]) if len(args) > 1 else int(os.environ.get("JARVIS_BENCH_MEM_N", "1000000"))
    from jarvis.contract import load_contract
    from jarvis.dataset.workers import cpus

    system = load_contract("reply@1").system_prompt
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        base = Path(tmp)
        src = base / "input.jsonl"
        make_input(src, n)
        _jarvis_once(src, base / "warm", jobs=1)  # imports and contract load are not per record
        few = base / "few.jsonl"
        make_input(few, 200, seed=4)  # a run's fixed part: enough for every split to form a batch

        def hand() -> float:
            t = time.perf_counter()
            baseline(src, base / "baseline", system)
            return time.perf_counter() - t

        # The baseline and --jobs 1 in this process (imports done); --jobs 2 against 1 as
        # CLI runs, each a fresh process, as users start them (workers fork from there).
        runs = alternate(
            {
                "base": hand,
                "one": lambda: _jarvis_once(src, base / "jarvis1", jobs=1),
                "cli1": lambda: _cli_once(src, base / "cli1", jobs=1),
                "cli2": lambda: _cli_once(src, base / "cli2", jobs=2),
                "auto": lambda: _cli_once(src, base / "cli"),
                "both": lambda: _both_once(src, base),
                "start": lambda: _cli_once(few, base / "few", jobs=1),
            }
        )
        per = {k: runs.median(k) / n * 1e6 for k in runs.runs if k != "start"}
        print(f"records: {n}, {cpus()} CPUs, {ROUNDS} rounds (medians; a ratio is the median")
        print("of the rounds' ratios, with their range)")
        print(f"baseline (hand-written, 1 process): {per['base']:7.2f} us/record")
        print(f"render-dataset --jobs 1:            {per['one']:7.2f} us/record")
        print(f"CLI --jobs 1 (a fresh process):     {per['cli1']:7.2f} us/record")
        print(f"CLI --jobs 2:                       {per['cli2']:7.2f} us/record")
        print(f"CLI default (auto):                 {per['auto']:7.2f} us/record")
        print(f"ratio, one process each: {_ratio_text(runs.ratio('one', 'base'))} (goal <= 2.5x)")
        print(f"ratio, CLI --jobs 2 / 1: {_ratio_text(runs.ratio('cli2', 'cli1'))} (goal <= 0.6x)")
        print(f"  bound: {_floor_text(runs, 'cli1', 'both', 'start')}")
        print(f"ratio, CLI default / baseline: {_ratio_text(runs.ratio('auto', 'base'))}")
        tok_n = min(n, 60000)
        tokenizer_anchor(base, tok_n, system, tuple(sorted({tok_n, min(n, 150000)})), few)
        if mem_n:
            big = base / "big.jsonl"
            make_input(big, mem_n, seed=1)
            mb = peak_memory_mb(big, base / "mem")
            print(f"peak memory, {mem_n} records: {mb:.0f} MB (goal <= 250 MB)")
            # Records of no thread: a split unit each, so the plan ranks a million units.
            make_input(big, mem_n, seed=1, threads=False)
            mb = peak_memory_mb(big, base / "mem")
            print(f"peak memory, {mem_n} records of no thread: {mb:.0f} MB (goal <= 250 MB)")


if __name__ == "__main__":
    main()
