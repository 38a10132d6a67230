"""ReplyEngine speed on a tiny CPU model: prefix-cache time to first token, decode overhead.

1. Time to first token with a >= 1,500-token system prompt, with and without the prefix cache
   (a temp contract root holds a copy of `reply` with a long system prompt).
2. Decode tokens per second of `ReplyEngine.stream_reply` against raw `mlx_lm.stream_generate`
   on the same model, prompt and greedy sampler (target: overhead at most 5%).
3. With SmolLM2-135M present (`make real-model`, or `$JARVIS_REAL_MODEL`): the same two on the
   real model with the reply contract's own prompt, and the peak memory; skipped with the
   reason otherwise. `make FAST_BLAS=1 bench` runs it with OpenBLAS.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

THREAD = [{"sender": "Sam", "text": "you coming tonight? the others are already there"}]
DECODE_TOKENS = 256
ROUNDS = 7


def long_contract_root(dest: Path, rules: int = 80) -> Path:
    """Copy the bundled `reply` contract into `dest` with a long (static) system prompt."""
    from jarvis.contract import bundled_root

    src = bundled_root()
    shutil.copytree(src / "contracts", dest / "contracts")
    shutil.copytree(src / "prompts", dest / "prompts")
    # No contracts.lock: the edited reply@1 is a new, unlocked version in this root.
    extra = " ".join(f"rule{i} keep replies short and casual." for i in range(rules))
    system = dest / "prompts" / "reply" / "v1" / "system.j2"
    system.write_text(system.read_text() + "\n" + extra + "\n")
    return dest


def _ttft(engine: Any, use_cache: bool) -> float:
    reply = engine.reply(THREAD, max_tokens=1, temperature=0.0, stop=[], use_cache=use_cache)
    return float(reply.ttft_s)


def bench_ttft(
    model: Path, root: Path | None, rounds: int = ROUNDS, min_prefix: int = 1500
) -> tuple[float, float, int]:
    """Return median TTFT without and with the prefix cache, and the prefix length."""
    from jarvis.engine import ReplyEngine

    engine = ReplyEngine(model, contract="reply@1", root=root)
    _ttft(engine, True), _ttft(engine, False)  # warm up
    cold, warm = [], []
    for _ in range(rounds):
        cold.append(_ttft(engine, False))
        warm.append(_ttft(engine, True))
    assert len(engine.prefix_tokens) >= min_prefix, (
        f"the benchmark needs a >= {min_prefix}-token prefix"
    )
    return statistics.median(cold), statistics.median(warm), len(engine.prefix_tokens)


def _decode_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


def bench_decode(
    model: Path, rounds: int = ROUNDS, tokens_wanted: int = DECODE_TOKENS, exact: bool = True
) -> tuple[float, float]:
    """Return the median decode tokens/s of raw stream_generate and of ReplyEngine.

    `exact=False` (a real model, which may stop at EOS) compares rates over what was made.
    """
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from jarvis.engine import ReplyEngine

    engine = ReplyEngine(model, contract="reply@1")
    tokens = engine.prompt_tokens(THREAD)
    sampler = make_sampler(temp=0.0)

    def raw() -> float:
        times = []
        for _ in stream_generate(
            engine.model, engine.tokenizer, mx.array(tokens), max_tokens=tokens_wanted,
            sampler=sampler,
        ):  # fmt: skip
            times.append(time.perf_counter())
        return _decode_rate(times)

    def ours() -> float:
        times = []
        options: dict[str, Any] = {"max_tokens": tokens_wanted, "temperature": 0.0, "stop": []}
        for _ in engine.stream_reply(THREAD, **options):
            times.append(time.perf_counter())
        assert not exact or len(times) == tokens_wanted, (
            "generation ended early; the comparison needs equal length"
        )
        return _decode_rate(times)

    raw(), ours()  # warm up
    raws, engines = [], []
    for _ in range(rounds):
        raws.append(raw())
        engines.append(ours())
    return statistics.median(raws), statistics.median(engines)


def main() -> None:
    """Build a tiny model, run both benchmarks, print the ratios."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from jarvis.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "model")
        root = long_contract_root(Path(tmp) / "root")
        cold, warm, prefix = bench_ttft(model, root)
        print(f"time to first token, {prefix}-token system prefix (tiny model, CPU):")
        print(f"  without prefix cache {cold * 1000:8.2f} ms")
        print(f"  with prefix cache    {warm * 1000:8.2f} ms")
        print(f"  ratio: {cold / warm:.1f}x faster with the cache")
        raw, ours = bench_decode(model)
        print(f"decode tokens/s, {DECODE_TOKENS} tokens, greedy:")
        print(f"  mlx_lm.stream_generate {raw:9.1f} tok/s")
        print(f"  ReplyEngine            {ours:9.1f} tok/s")
        print(f"  ratio: {ours / raw:.3f} (overhead {max(0.0, 1 - ours / raw):.1%}; target <= 5%)")
    bench_real_model()


def bench_real_model() -> None:
    """The engine on SmolLM2-135M, when it is here."""
    import resource

    from jarvis.blas import active

    real = Path(os.environ.get("JARVIS_REAL_MODEL", "models/smollm2-135m"))
    if not (real / "config.json").is_file():
        print(f"real model: skipped, no model at {real} (run `make real-model`)")
        return
    blas = "OpenBLAS" if active() else "the mlx[cpu] wheel's BLAS"
    cold, warm, prefix = bench_ttft(real, None, rounds=3, min_prefix=1)
    print(f"real model {real} ({blas}): time to first token, reply@1, {prefix}-token prefix:")
    print(f"  without prefix cache {cold * 1000:8.1f} ms")
    print(f"  with prefix cache    {warm * 1000:8.1f} ms")
    print(f"  ratio: {cold / warm:.1f}x faster with the cache")
    raw, ours = bench_decode(real, rounds=2, tokens_wanted=32, exact=False)
    print(f"  decode: mlx_lm.stream_generate {raw:.1f} tok/s, ReplyEngine {ours:.1f} tok/s "
          f"(ratio {ours / raw:.3f})")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak resident memory of this process: {peak:.0f} MB")
    from jarvis.audit import audit_chat_template, load_chat_template
    from jarvis.contract import load_contract
    from jarvis.diff import sample_records

    template = load_chat_template(str(real))
    for ref in ("reply@1", "codegen@1"):
        contract = load_contract(ref)
        records = [r for _, r in sample_records(contract)]
        report = audit_chat_template(template, contract, records)
        shown = [f"{f.severity} {f.check}" for f in report.findings if f.severity != "ok"]
        notes = "; ".join(shown) or "every check ok"
        print(f"  chat-template audit, SmolLM2 with {ref}: {report.verdict} ({notes})")


if __name__ == "__main__":
    main()
