"""`make demo`: the whole chain on the bundled data and a tiny offline model, on a CPU.

Steps: build a tiny model, `jarvis render-dataset`, `jarvis train`, `jarvis verify` and
`check_adapter` on the adapter's stamp, `jarvis reply`, and show that an adapter with an
edited fingerprint is refused. Each step runs the real command line in a subprocess and
prints what it did. Output goes to `demo-out/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jarvis.contract import bundled_root

OUT = Path("demo-out")


def _step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}", flush=True)


def _jarvis(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `jarvis ARGS` as a user would, echoing the command and its output."""
    print("$ jarvis " + " ".join(args), flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "jarvis", *args], capture_output=True, text=True, check=False
    )
    for line in (proc.stdout + proc.stderr).rstrip("\n").splitlines():
        print(f"  {line}")
    if check and proc.returncode != 0:
        raise SystemExit(f"demo failed: jarvis {args[0]} exited {proc.returncode}")
    return proc


def main() -> None:
    """Run the demo chain and print what each step did."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    model, data, adapter = OUT / "tiny-model", OUT / "data", OUT / "adapter"

    _step(1, "build a tiny random llama model offline (stands in for a real base model)")
    _jarvis("dev", "tiny-model", str(model))

    _step(2, "render the training data through the reply@1 contract")
    examples = bundled_root() / "examples" / "reply"
    # What went wrong for real teams becomes an error here: the hand-written `perfect` examples
    # must keep their share of train, every target must pass the contract's output checks, no
    # row may be truncated.
    _jarvis(
        "render-dataset", "--contract", "reply@1",
        "--input", str(examples / "threads.jsonl"),
        "--input", f"perfect={examples / 'perfect.jsonl'}",
        "--min-ratio", "perfect=0.1", "--min-compliant", "0.95",
        "--tokenizer", str(model), "--max-seq-length", "512", "--split", "0.8,0.1,0.1",
        "--out", str(data),
    )  # fmt: skip
    empty = OUT / "empty"
    empty.mkdir()
    print(
        "  # a training run pointed at an empty data folder (a real team's mistake: their\n"
        "  # adapter learned noise) now fails before any model loads"
    )
    _jarvis("train", "--dataset", str(empty), "--model", str(model),
            "--adapter", str(OUT / "never"), check=False)  # fmt: skip

    _step(3, "train a LoRA adapter (a few iterations on CPU); the adapter gets a jarvis stamp")
    _jarvis(
        "train", "--dataset", str(data), "--model", str(model), "--adapter", str(adapter),
        "--iters", "20", "--batch-size", "2", "--learning-rate", "5e-3",
    )  # fmt: skip

    _step(4, "verify the adapter's stamp against the dataset, the contract and the base model")
    # --contract: the app serves reply@1 (reply@2, the latest, adds retrieval: see `jarvis index`).
    _jarvis(
        "verify", str(data), "--adapter", str(adapter), "--tokenizer", str(model),
        "--contract", "reply@1",
    )  # fmt: skip
    stamp = json.loads((adapter / "adapter_config.json").read_text())["jarvis"]
    for key in ("ref", "fingerprint", "dataset_manifest_sha256", "base_model"):
        print(f"  jarvis.{key}: {stamp[key]}")
    print(f"  jarvis.chat_template_sha256: {stamp['chat_template_sha256']}")
    from jarvis.adapter import check_adapter
    from jarvis.contract import load_contract

    warnings = check_adapter(adapter, load_contract(stamp["ref"]), base_model=model)
    print("  check_adapter: " + ("; ".join(warnings) or "matches reply@1 and the base model"))

    _step(5, "reply through the contract (the model is random: expect noise, not words)")
    print("  # the exact prompt the adapter was trained on, without loading the model:")
    _jarvis("reply", "--adapter", str(adapter), "--dry-run",
            "--sender", "Sam", "you coming tonight?")  # fmt: skip
    print("  # the adapter's stamp names its contract and base model: no --model needed")
    _jarvis("reply", "--adapter", str(adapter), "--json", "--seed", "3",
            "--sender", "Sam", "you", "coming", "tonight?")  # fmt: skip

    _step(6, "edit the adapter's fingerprint: jarvis reply refuses it (exit 8)")
    bad = OUT / "adapter-edited"
    shutil.copytree(adapter, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config["jarvis"]["fingerprint"] = "0" * 64
    (bad / "adapter_config.json").write_text(json.dumps(config, indent=4))
    proc = _jarvis("reply", "--model", str(model), "--adapter", str(bad), "hi", check=False)
    if proc.returncode != 8:
        raise SystemExit(f"demo failed: expected exit 8, got {proc.returncode}")
    print(f"  exit code {proc.returncode}")

    print(f"\ndemo finished in {time.perf_counter() - start:.1f}s; everything is in {OUT}/")
    print("On a Mac with a real model: see README, 'Train and reply on a real model'.")


if __name__ == "__main__":
    main()
