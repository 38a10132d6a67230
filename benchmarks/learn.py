"""`make bench-learn`: the post-mortem's experiment on a real model, three arms.

SmolLM2-135M-Instruct is asked to answer coding instructions in the codegen contract's
format (### Solution / ### Usage / ### Sanity test, a docstring with Args: and Returns:):

- **base**: no adapter;
- **naive**: the post-mortem's pipeline: 2,000 generic instructions with the 20 perfect-format
  examples appended last, an order-based 98/2 split, rows as mlx-lm chat data (rendered by
  the same contract, so only the data pipeline differs), trained with `mlx_lm.lora`;
- **jarvis**: the same inputs through `jarvis render-dataset` (perfect examples tagged, a
  stratified split, the `--repeat` its compliance warning suggests, `--min-compliant 0.5`)
  and `jarvis train`, with the same hyper-parameters.

Every arm answers the same held-out instructions (`benchmarks/data/codegen_heldout.jsonl`,
written for this benchmark, never trained on; `$JARVIS_HELDOUT` for another set), greedy and
batched, scored by the contract's own checks (each and all). The generic instructions are
CodeAlpaca 2k (CC BY-NC 4.0, not vendored: taken by path, `$JARVIS_CODEALPACA`); the
perfect-format examples are the project's own (`examples/codegen/perfect.jsonl`).
Results go to `bench-learn-out/` (results.json, a table, learn.png).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = Path(os.environ.get("JARVIS_REAL_MODEL", ROOT / "models" / "smollm2-135m"))
CODEALPACA = Path(
    os.environ.get(
        "JARVIS_CODEALPACA", ROOT.parent / "shared/realdata/data/codealpaca/code_alpaca_2k.json"
    )
)
HELDOUT = Path(os.environ.get("JARVIS_HELDOUT", ROOT / "benchmarks/data/codegen_heldout.jsonl"))
OUT = Path(os.environ.get("JARVIS_LEARN_OUT", ROOT / "bench-learn-out"))
ITERS = int(os.environ.get("JARVIS_LEARN_ITERS", "60"))
MAX_TOKENS = int(os.environ.get("JARVIS_LEARN_MAX_TOKENS", "320"))
LR = float(os.environ.get("JARVIS_LEARN_LR", "1e-4"))
SETTINGS = {"batch_size": 4, "learning_rate": LR, "num_layers": 8, "rank": 8, "seed": 0}
# The sweep: (perfect examples given, --repeat) -> about 0.05%, 1%, 5% and 20% of train.
SWEEP = [(1, 1), (20, 1), (20, 5), (20, 25)]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _inputs(work: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    generic = json.loads(CODEALPACA.read_text(encoding="utf-8"))[:2000]
    records = [
        {"instruction": g["instruction"], "input": g.get("input", ""), "output": g["output"]}
        for g in generic
        if g.get("instruction") and g.get("output")
    ]
    perfect = [json.loads(x) for x in (ROOT / "examples/codegen/perfect.jsonl").open()][:20]
    for p in perfect:
        p.pop("tags", None)
        p.pop("id", None)
    return (
        _jsonl(work / "generic.jsonl", records),
        _jsonl(work / "perfect.jsonl", perfect),
        [
            *records,
            *perfect,
        ],
    )


def _jarvis(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "jarvis", *args], capture_output=True, text=True, env=os.environ
    )
    if done.returncode not in (0,):
        print(done.stdout, done.stderr, file=sys.stderr)
    return done


def _naive(work: Path, rows: list[dict[str, Any]]) -> Path:
    """The post-mortem's data: records in file order, the last 2% as valid."""
    from jarvis.contract import load_contract

    contract = load_contract("codegen@1")
    folder = work / "naive-data"
    folder.mkdir(exist_ok=True)
    cut = int(len(rows) * 0.98)
    for name, part in (("train", rows[:cut]), ("valid", rows[cut:])):
        chat = [
            {"messages": contract.messages(contract.validate(r), with_target=True)} for r in part
        ]
        _jsonl(folder / f"{name}.jsonl", chat)
    perfect_in_train = sum(r["output"].startswith("### Solution") for r in rows[:cut])
    print(f"naive: {cut} train rows, {len(rows) - cut} valid; perfect in train: {perfect_in_train}")
    return folder


def _train_naive(data: Path, adapter: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "lora", "--model", str(MODEL), "--train",
         "--data", str(data), "--adapter-path", str(adapter), "--iters", str(ITERS),
         "--batch-size", str(SETTINGS["batch_size"]),
         "--learning-rate", str(SETTINGS["learning_rate"]),
         "--num-layers", str(SETTINGS["num_layers"]), "--mask-prompt",
         "--steps-per-eval", str(ITERS), "--val-batches", "2", "--seed", str(SETTINGS["seed"]),
         "--max-seq-length", "1024"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"naive training failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def _train_jarvis(
    work: Path, generic: Path, perfect: Path, adapter: Path, repeat: int | None = None
) -> tuple[float, str, float]:
    """Render and train the jarvis arm; `repeat=None` takes what jarvis's warning suggests.

    Returns:
        Seconds (render and train), the repeat used, and the perfect share of train.
    """
    start = time.perf_counter()
    base = ["render-dataset", "--contract", "codegen@1", "--input", str(generic),
            "--input", f"perfect={perfect}", "--split", "0.98,0.02,0", "--force", "-q"]  # fmt: skip
    data = work / f"{adapter.name}-data"
    if repeat is None:
        probe = _jarvis(*base, "--out", str(work / "jarvis-probe"))
        found = re.search(r"--repeat perfect=(\d+)", probe.stderr)
        repeat = int(found.group(1)) if found else 1
        mix = ["--repeat", f"perfect={repeat}", "--min-compliant", "0.5"]
    else:
        mix = ["--repeat", f"perfect={repeat}"]
    done = _jarvis(
        *base, *mix, "--tokenizer", str(MODEL), "--max-seq-length", "1024", "--out", str(data),
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"jarvis render-dataset failed: {done.stderr}")
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    train = manifest["splits"]["train"]
    share = float(train["tags"].get("perfect", {}).get("share", 0.0))
    done = _jarvis(
        "train", "--dataset", str(data), "--model", str(MODEL),
        "--adapter", str(adapter), "--force", "--iters", str(ITERS),
        "--batch-size", str(SETTINGS["batch_size"]),
        "--learning-rate", str(SETTINGS["learning_rate"]),
        "--num-layers", str(SETTINGS["num_layers"]), "--max-seq-length", "1024",
        "--seed", str(SETTINGS["seed"]),
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"jarvis train failed: {done.stderr}")
    return time.perf_counter() - start, str(repeat), share


def _score(adapter: Path | None, allow_mismatch: bool) -> dict[str, Any]:
    from jarvis.engine import ReplyEngine

    requests = [json.loads(x) for x in HELDOUT.open() if x.strip()]
    start = time.perf_counter()
    engine = ReplyEngine(
        str(MODEL), None if adapter is None else str(adapter), contract="codegen@1",
        allow_mismatch=allow_mismatch,
    )  # fmt: skip
    replies = engine.reply_batch(requests, max_tokens=MAX_TOKENS, batch_size=len(requests))
    seconds = time.perf_counter() - start
    names = [next(iter(c)) for c in engine.contract.spec.checks]
    per_check = {
        n: sum(r.checks[i].passed for r in replies) / len(replies) for i, n in enumerate(names)
    }
    return {
        "prompts": len(replies),
        "all_checks": sum(r.passed for r in replies) / len(replies),
        "per_check": per_check,
        "eval_seconds": round(seconds, 1),
        "samples": [r.text for r in replies[:3]],
    }


def _chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    arms = list(results["arms"])
    values = [100 * results["arms"][a]["all_checks"] for a in arms]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(arms, values, color=["#999999", "#d9822b", "#2b7bd9"][: len(arms)])
    for i, v in enumerate(values):
        ax.text(i, v + 1, f"{v:.0f}%", ha="center")
    ax.set_ylim(0, 110)
    ax.set_ylabel("held-out replies passing every check (%)")
    ax.set_title(f"SmolLM2-135M, codegen@1, {results['prompts']} held-out instructions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _missing() -> str | None:
    if not (MODEL / "config.json").is_file():
        return f"skipped: no real model at {MODEL} (run `make real-model`)"
    if not CODEALPACA.is_file():
        return f"skipped: no CodeAlpaca 2k at {CODEALPACA} (set JARVIS_CODEALPACA)"
    return None


def sweep() -> None:
    """The perfect share of train from about 0.05% to 20%, jarvis arm settings otherwise."""
    if reason := _missing():
        print(reason)
        return
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    generic, perfect, _ = _inputs(work)
    path = OUT / "sweep.json"
    points: list[dict[str, Any]] = (
        json.loads(path.read_text(encoding="utf-8"))["points"] if path.is_file() else []
    )
    for count, repeat in SWEEP:
        if any(p["perfect"] == count and p["repeat"] == repeat for p in points):
            continue  # resumable: a finished point is kept
        given = work / f"perfect-{count}.jsonl"
        given.write_text("".join(perfect.read_text(encoding="utf-8").splitlines(True)[:count]))
        adapter = work / f"sweep-{count}x{repeat}"
        seconds, _, share = _train_jarvis(work, generic, given, adapter, repeat=repeat)
        scored = _score(adapter, False)
        points.append(
            {"perfect": count, "repeat": repeat, "share": share, "train_seconds": round(seconds),
             "all_checks": scored["all_checks"], "per_check": scored["per_check"]}
        )  # fmt: skip
        points.sort(key=lambda p: p["share"])
        path.write_text(json.dumps({"settings": SETTINGS, "iters": ITERS, "points": points},
                                   indent=2) + "\n", encoding="utf-8")  # fmt: skip
    print("| perfect share of train | all checks | sections | train s |")
    print("|---|---|---|---|")
    for p in points:
        print(
            f"| {p['share']:.2%} ({p['perfect']} x{p['repeat']}) | {p['all_checks']:.0%} "
            f"| {p['per_check']['sections']:.0%} | {p['train_seconds']} |"
        )
    _sweep_chart(points, OUT / "sweep.png")


def _sweep_chart(points: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [100 * p["share"] for p in points]
    ax.plot(xs, [100 * p["all_checks"] for p in points], "o-", label="every check")
    ax.plot(xs, [100 * p["per_check"]["sections"] for p in points], "s--", label="sections")
    ax.set_xscale("log")
    ax.set_xlabel("perfect-format share of train (%)")
    ax.set_ylabel("held-out replies passing (%)")
    ax.set_ylim(-5, 105)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Run the three arms and write the results (skipped with the reason when inputs lack)."""
    if reason := _missing():
        print(reason)
        return
    OUT.mkdir(exist_ok=True)
    work = OUT / "work"
    work.mkdir(exist_ok=True)
    generic, perfect, rows = _inputs(work)
    results: dict[str, Any] = {"iters": ITERS, "settings": SETTINGS, "arms": {}}
    started = time.perf_counter()

    def save() -> None:
        (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    results["arms"]["base"] = {**_score(None, False), "train_seconds": 0.0}
    save()
    naive_seconds = _train_naive(_naive(work, rows), work / "naive-adapter")
    # The naive adapter has no jarvis stamp (mlx_lm.lora wrote it): loaded with a warning.
    results["arms"]["naive"] = {
        **_score(work / "naive-adapter", True),
        "train_seconds": round(naive_seconds, 1),
    }
    save()
    jarvis_seconds, repeat, share = _train_jarvis(work, generic, perfect, work / "jarvis-adapter")
    results["arms"]["jarvis"] = {
        **_score(work / "jarvis-adapter", False),
        "train_seconds": round(jarvis_seconds, 1),
        "repeat": repeat,
        "perfect_share": share,
    }
    results["prompts"] = results["arms"]["base"]["prompts"]
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    save()
    _chart(results, OUT / "learn.png")
    print("| arm | all checks | sections | python_parses | docstring | train s | eval s |")
    print("|---|---|---|---|---|---|---|")
    for arm, r in results["arms"].items():
        c = r["per_check"]
        print(
            f"| {arm} | {r['all_checks']:.0%} | {c['sections']:.0%} "
            f"| {c['python_parses']:.0%} | {c['docstring_sections']:.0%} "
            f"| {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |"
        )
    print(f"total {results['total_seconds']:.0f} s; jarvis arm repeat perfect={repeat}")


if __name__ == "__main__":
    from jarvis.blas import reexec_if_asked

    reexec_if_asked(sys.argv[1:], module="benchmarks.learn")  # JARVIS_FAST_BLAS=1: OpenBLAS
    sweep() if sys.argv[1:] == ["sweep"] else main()
