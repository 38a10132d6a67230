"""The exemplar store: build speed, retrieval latency against a plain Python scan, and
render-dataset with retrieval (reply@2) against without (reply@1), on the same records.

Data: the NUS SMS corpus (55,835 real texts) when `../shared/realdata` is present, repeated
to `N` exemplars (default 100,000); otherwise synthetic texts. Queries are other texts of
the same corpus. The render comparison uses DailyDialog when present (real multi-turn
dialogues as reply records), else the synthetic threads of `bench_render_dataset`.

Goals (issue 11): building >= 50,000 exemplars/s; retrieval p50 <= 1 ms and p99 <= 5 ms at
100,000 exemplars; render-dataset with retrieval <= 2x its time without.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from benchmarks.bench_render_dataset import alternate

ROOT = Path(__file__).resolve().parent.parent
REALDATA = Path(os.environ.get("JARVIS_REALDATA", ROOT.parent / "shared" / "realdata" / "data"))
NUS = REALDATA / "nus-sms-corpus" / "smsCorpus_en_xml_2015.03.09_all.zip"
DAILY = REALDATA / "dailydialog"
QWEN = REALDATA.parent / "tokenizers" / "qwen2.5-instruct"


def sms_texts() -> tuple[list[str], str]:
    """Real texts (NUS SMS) when present, else synthetic ones; and where they came from."""
    if NUS.is_file():
        with zipfile.ZipFile(NUS) as z:
            xml = z.read(z.namelist()[0]).decode("utf-8", "replace")
        texts = [
            t.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
            for t in re.findall(r"<text>(.*?)</text>", xml, re.S)
        ]
        return [t for t in texts if t.strip()], "NUS SMS corpus"
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like, as real text
    texts = [" ".join(rng.choices(vocab, weights, k=rng.randint(3, 20))) for _ in range(60000)]
    return texts, "synthetic Zipf texts (no ../shared/realdata)"


def dialogue_records() -> tuple[list[dict[str, object]], str]:
    """Reply records: DailyDialog's second speaker as the persona, else synthetic threads."""
    files = sorted(DAILY.glob("*/dialogues.txt")) if DAILY.is_dir() else []
    if not files:
        from benchmarks.bench_render_dataset import make_input

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "in.jsonl"
            make_input(path, 20000)
            return [json.loads(x) for x in path.read_text().splitlines()], "synthetic threads"
    records: list[dict[str, object]] = []
    for file in files:
        for d, line in enumerate(file.read_text(encoding="utf-8").splitlines()):
            turns = [t.strip() for t in line.split("__eou__") if t.strip()]
            names = ["Alex", "Jwalin"]
            for i in range(1, len(turns), 2):
                history = [
                    {"sender": names[j % 2], "text": turns[j]} for j in range(max(0, i - 6), i)
                ]
                records.append({
                    "id": f"{file.parent.name}-{d}-{i}", "thread": f"{file.parent.name}-{d}",
                    "messages": history, "reply": turns[i],
                })  # fmt: skip
    return records, "DailyDialog validation+test"


def _scan(items: list[tuple[str, set[str]]], query: set[str], k: int) -> list[str]:
    """The baseline: score every exemplar by shared terms in Python, keep the top k."""
    scored = [(-len(query & terms), i) for i, terms in items if query & terms]
    scored.sort()
    return [i for _, i in scored[:k]]


def main(argv: list[str] | None = None) -> None:
    """Build, query and render; print each figure beside its baseline and goal."""
    from jarvis.contract import load_contract
    from jarvis.dataset import Recipe, render_dataset
    from jarvis.rag.store import ExemplarStore, StoredExemplar, build_store
    from jarvis.rag.terms import STOP_WORDS, words

    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else int(os.environ.get("JARVIS_BENCH_RAG_N", "100000"))
    texts, source = sms_texts()
    contract = load_contract("reply@2")
    key = str(contract.retrieval_key)
    items = [
        StoredExemplar(
            f"x{i:07d}", f"t{i // 8}", texts[i % len(texts)], texts[(i + 1) % len(texts)]
        )
        for i in range(n)
    ]
    rng = random.Random(1)
    queries = [rng.choice(texts) for _ in range(2000)]
    print(f"exemplars: {n:,} ({source}); queries: {len(queries):,} texts of the same corpus")
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
        base = Path(tmp)
        builds = []
        for r in range(3):
            t = time.perf_counter()
            build_store(base / f"s{r}.sqlite", items, contract="reply", key=key)
            builds.append(time.perf_counter() - t)
        rate = n / statistics.median(builds)
        size = (base / "s0.sqlite").stat().st_size / 1e6
        print(f"build: {rate:,.0f} exemplars/s (median of 3; goal >= 50,000), {size:.0f} MB file")

        with ExemplarStore(base / "s0.sqlite") as store:
            for q in queries[:50]:
                store.search(q, 3)  # warm the page cache
            times = []
            for q in queries:
                t = time.perf_counter()
                store.search(q, 3, exclude_thread="t0")
                times.append(time.perf_counter() - t)
        terms = [(e.id, {w for w in words(e.message) if w not in STOP_WORDS}) for e in items]
        scan = []
        for q in queries[:100]:  # the scan is slow: 100 queries are enough for its median
            t = time.perf_counter()
            _scan(terms, {w for w in words(q) if w not in STOP_WORDS}, 3)
            scan.append(time.perf_counter() - t)
        times.sort()
        p50, p99 = times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3
        scan50 = statistics.median(scan) * 1e3
        print(
            f"retrieval: p50 {p50:.2f} ms, p99 {p99:.2f} ms (goal <= 1 / <= 5 ms); "
            f"plain Python scan p50 {scan50:.1f} ms: {scan50 / p50:.0f}x slower"
        )

        records, rsource = dialogue_records()
        src = base / "dialogues.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        tokenizers: list[str | None] = [None]
        if QWEN.is_dir():
            tokenizers.append(str(QWEN))
        for tokenizer in tokenizers:

            def run(ref: str, tokenizer: str | None = tokenizer) -> float:
                recipe = Recipe.build(
                    contract=ref, inputs=[str(src)], tokenizer=tokenizer, max_seq_length=4096
                )
                t = time.perf_counter()
                render_dataset(recipe, base / ref, force=True, jobs=1)
                return time.perf_counter() - t

            # Alternate A and B: the machine is shared and noisy.
            runs = alternate(
                {ref: lambda ref=ref: run(ref) for ref in ("reply@1", "reply@2")}, repeats=3
            )
            without, with_ = runs.median("reply@1"), runs.median("reply@2")
            manifest = json.loads((base / "reply@2" / "manifest.json").read_text())
            share = manifest["retrieval"]["splits"]["train"]["rows_with_exemplars"]
            how = "no tokenizer" if tokenizer is None else "Qwen2.5 tokenizer"
            print(
                f"render-dataset, {len(records):,} records ({rsource}, {how}, one process): "
                f"without retrieval {without:.2f} s, with {with_:.2f} s: "
                f"{with_ / without:.2f}x (goal <= 2x); {share:.0%} of train rows have exemplars"
            )


if __name__ == "__main__":
    main()
