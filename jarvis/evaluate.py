"""`jarvis eval`: generate a reply per held-out record and score base and fine-tuned side by side.

The post-mortems read generated outputs by hand to learn that a fine-tune had not picked up the
format. This scores every reply with the contract's own output checks (pass rate per check),
its length against the target, and normalised exact match, overall and per tag, and writes
`report.json`, `report.md`, `replies.jsonl` and a `comparison.png` chart.
"""

from __future__ import annotations

import json
import os
import re
import string
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jarvis.contract import Contract, load_contract
from jarvis.errors import DatasetError
from jarvis.outdir import atomic_dir, check_output

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPLIES = "replies.jsonl"
CHART = "comparison.png"
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lowercase, collapse whitespace and drop surrounding punctuation, for exact match."""
    return _SPACE.sub(" ", text).strip().strip(string.punctuation + " ").lower()


def words(text: str) -> int:
    """Whitespace-separated word count."""
    return len(text.split())


def check_names(contract: Contract) -> list[str]:
    """One unique name per output check of the contract (`max_words`, `max_words#2`, ...)."""
    names: list[str] = []
    for spec in contract.spec.checks:
        name = next(iter(spec))
        n = sum(1 for x in names if x == name or x.startswith(f"{name}#"))
        names.append(name if n == 0 else f"{name}#{n + 1}")
    return names


def contract_length(contract: Contract) -> float | None:
    """The contract's typical reply length in words, if a parameter states one."""
    for key, value in contract.parameters.items():
        if "length" in key and "word" in key and isinstance(value, int | float):
            return float(value)
    return None


@dataclass(frozen=True)
class Item:
    """One evaluated record: its input, reference target and the reply of each run."""

    rid: str
    tag: str
    prompt: str
    target: str
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_split(
    folder: Path, split: str, limit: int | None
) -> tuple[dict[str, Any], list[tuple[str, str, dict[str, Any]]]]:
    """Return the manifest and `(id, tag, record)` of one split (first `limit` of them).

    Raises:
        DatasetError: no manifest, `records.jsonl` changed since it was rendered, or the
            split has no records.
        InputError: `records.jsonl` is missing or malformed.
    """
    from jarvis.dataset import load_manifest, read_records

    manifest = load_manifest(folder)
    out = [
        (str(item.get("id")), str(item.get("tag", "default")), item["record"])
        for item in read_records(folder, manifest)
        if item.get("split") == split
    ]
    if not out:
        raise DatasetError(f"{folder}: the {split} split has no records to evaluate")
    return manifest, out[:limit] if limit else out


def score(
    items: Sequence[Item], run: str, names: Sequence[str], length: float | None
) -> dict[str, Any]:
    """Aggregate one run's replies over `items`: rates per check, exact match, length."""
    n = len(items)
    replies = [i.replies[run] for i in items]
    checks = {
        name: sum(r["checks"][k]["passed"] for r in replies) / n for k, name in enumerate(names)
    }
    mean_words = sum(r["words"] for r in replies) / n
    target_words = sum(words(i.target) for i in items) / n
    reference = length if length is not None else target_words
    return {
        "records": n,
        "checks": {k: round(v, 4) for k, v in checks.items()},
        "all_checks": round(sum(all(c["passed"] for c in r["checks"]) for r in replies) / n, 4),
        "exact_match": round(sum(r["exact"] for r in replies) / n, 4),
        "mean_words": round(mean_words, 2),
        "target_mean_words": round(target_words, 2),
        "contract_length_words": length,
        "length_ratio": round(mean_words / reference, 3) if reference else None,
        "finished_by_length": round(sum(r["finish_reason"] == "length" for r in replies) / n, 4),
    }


@dataclass
class EvalReport:
    """What `jarvis eval` wrote: the JSON report and where the files are."""

    out: Path
    data: dict[str, Any]
    chart: Path | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The content of `report.json`."""
        return self.data

    def lines(self) -> list[str]:
        """A short console summary: the side-by-side table and the files written."""
        out = table_lines(self.data)
        out.append(f"wrote {self.out / REPORT_JSON}, {self.out / REPORT_MD}, {self.out / REPLIES}")
        out.append(
            f"chart: {self.chart}" if self.chart else f"chart: not written ({self.notes[-1]})"
        )
        return out


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def metric_rows(data: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """(metric, one cell per run) rows for the side-by-side tables."""
    runs = list(data["runs"])
    summaries = [data["runs"][r]["summary"] for r in runs]
    rows: list[tuple[str, list[str]]] = []
    for name in summaries[0]["checks"]:
        rows.append((f"check {name}", [_pct(s["checks"][name]) for s in summaries]))
    rows.append(("all checks pass", [_pct(s["all_checks"]) for s in summaries]))
    rows.append(("exact match (normalised)", [_pct(s["exact_match"]) for s in summaries]))
    rows.append(("mean words", [f"{s['mean_words']:.1f}" for s in summaries]))
    rows.append(("target mean words", [f"{s['target_mean_words']:.1f}" for s in summaries]))
    if summaries[0]["contract_length_words"] is not None:
        rows.append(
            ("contract length (words)", [f"{s['contract_length_words']:g}" for s in summaries])
        )
    rows.append(("length ratio", [f"{s['length_ratio']}" for s in summaries]))
    rows.append(("stopped at max_tokens", [_pct(s["finished_by_length"]) for s in summaries]))
    return rows


def table_lines(data: Mapping[str, Any]) -> list[str]:
    """A plain-text table of every metric, one column per run."""
    runs = list(data["runs"])
    rows = [("metric", runs), *metric_rows(data)]
    width = max(len(r[0]) for r in rows)
    cols = [max(len(r[1][i]) for r in rows) for i in range(len(runs))]
    head = f"{data['contract']['ref']} on {data['split']} ({data['records']} records)"
    return [head] + [
        f"{name.ljust(width)}  " + "  ".join(c.rjust(w) for c, w in zip(cells, cols, strict=True))
        for name, cells in rows
    ]


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += [
        "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows
    ]
    return out


def markdown(data: Mapping[str, Any], items: Sequence[Item], chart: str | None) -> str:
    """Render `report.md`: overall and per-tag tables, then a few replies side by side."""
    runs = list(data["runs"])
    lines = [
        f"# Evaluation: {data['contract']['ref']} on the {data['split']} split",
        "",
        f"- dataset: `{data['dataset']}` ({data['records']} records)",
        f"- model: `{data['model']}`",
        f"- adapter: `{data['adapter']}`" if data["adapter"] else "- adapter: none",
        f"- generation: greedy, max_tokens {data['generation']['max_tokens']}",
        "",
        "## Overall",
        "",
        *_md_table(["metric", *runs], [(m, *cells) for m, cells in metric_rows(data)]),
        "",
    ]
    if chart:
        lines += [f"![comparison]({chart})", ""]
    tags = sorted(data["runs"][runs[0]]["per_tag"])
    lines += ["## Per tag", ""]
    header = ["tag", "records"]
    for run in runs:
        header += [f"{run}: all checks", f"{run}: exact", f"{run}: words"]
    rows = []
    for tag in tags:
        row = [tag, str(data["runs"][runs[0]]["per_tag"][tag]["records"])]
        for run in runs:
            s = data["runs"][run]["per_tag"][tag]
            row += [_pct(s["all_checks"]), _pct(s["exact_match"]), f"{s['mean_words']:.1f}"]
        rows.append(row)
    lines += [*_md_table(header, rows), "", "## Replies (first 10)", ""]
    header = ["id", "input", "target", *runs]
    rows = [
        [i.rid, tail_words(i.prompt, 120), i.target, *(i.replies[r]["text"] for r in runs)]
        for i in items[:10]
    ]
    lines += _md_table(header, rows)
    return "\n".join(lines) + "\n"


# Greedy evaluation decodes this many records together (mlx-lm's BatchGenerator): the same
# replies as one at a time (tested), far fewer passes over the weights.
EVAL_BATCH = 32


def _replies(
    engine: Any,
    requests: Sequence[dict[str, Any]],
    max_tokens: int,
    temperature: float,
    seed: int,
    bar: Any,
) -> Iterator[Any]:
    """Every request's reply, in order: batched when greedy, else one at a time (seeded)."""
    if temperature == 0.0:
        for start in range(0, len(requests), EVAL_BATCH):
            chunk = requests[start : start + EVAL_BATCH]
            yield from engine.reply_batch(chunk, max_tokens=max_tokens, batch_size=EVAL_BATCH)
            if bar is not None:
                bar.update(len(chunk))
        return
    for request in requests:
        yield engine.reply(request, max_tokens=max_tokens, temperature=temperature, seed=seed)
        if bar is not None:
            bar.update(1)


def tail_words(text: str, limit: int) -> str:
    """The end of `text` in at most `limit` characters, cut at a word boundary, marked `…`.

    The end of a prompt is what the reply answers (the last message), so the head goes.
    """
    if len(text) <= limit:
        return text
    cut = text[len(text) - limit + 1 :]
    space = cut.find(" ")
    if 0 <= space < len(cut) - 1:
        cut = cut[space + 1 :]
    return "…" + cut


def reference_lines(summary: Mapping[str, Any]) -> list[tuple[float, str, str]]:
    """The chart's reference lines for mean words: `(value, line style, legend label)`.

    The targets' own mean length, and the contract's `*length_words` parameter when it has
    one; each is labelled with what it is and its value.
    """
    target = float(summary["target_mean_words"])
    lines = [(target, "--", f"target mean ({target:.1f})")]
    length = summary.get("contract_length_words")
    if length is not None:
        lines.append((float(length), ":", f"contract length ({float(length):g})"))
    return lines


def write_chart(data: Mapping[str, Any], path: Path) -> str | None:
    """Draw the grouped bar chart; return None, or why it could not be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; `pip install jarvis[eval]` for the chart"
    runs = list(data["runs"])
    summaries = [data["runs"][r]["summary"] for r in runs]
    labels = [*summaries[0]["checks"], "all checks", "exact match"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(runs)
    for k, (run, s) in enumerate(zip(runs, summaries, strict=True)):
        values = [*s["checks"].values(), s["all_checks"], s["exact_match"]]
        xs = [i + k * width for i in range(len(labels))]
        left.bar(xs, [100 * v for v in values], width, label=run)
        right.bar(k, s["mean_words"], 0.6, label=run)
    left.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(labels))], labels)
    left.set_ylim(0, 100)
    left.set_ylabel("pass rate (%)")
    left.set_title(f"{data['contract']['ref']} on {data['split']} ({data['records']} records)")
    left.legend()
    for value, style, label in reference_lines(summaries[0]):
        right.axhline(value, color="black", linestyle=style, label=label)
    right.set_xticks(range(len(runs)), runs)
    right.set_ylabel("mean words per reply")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def run_eval(
    dataset: str | os.PathLike[str],
    *,
    split: str = "test",
    model: str | None = None,
    adapter: str | None = None,
    baseline: bool = False,
    limit: int | None = None,
    sample: int | None = None,
    out: str | os.PathLike[str] = "eval-out",
    max_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    force: bool = False,
    allow_mismatch: bool = False,
    root: str | None = None,
    progress: bool = False,
) -> EvalReport:
    """Generate a reply for each record of a split and write the reports.

    Args:
        dataset: a folder written by `jarvis render-dataset` (needs `records.jsonl`).
        split: "train", "valid" or "test".
        model: base model folder or hub id; default: the base the adapter's stamp names.
        adapter: adapter folder; with `baseline`, the base model runs too, side by side.
        baseline: also run the base model without the adapter.
        limit: evaluate only the first N records of the split (in records.jsonl order).
        sample: evaluate N records chosen at random with a fixed seed, as `verify --sample`
            (applied after `limit`).
        out: report folder (`report.json`, `report.md`, `replies.jsonl`, `comparison.png`).
        max_tokens: default the contract's `generation.max_tokens`.
        temperature: sampling temperature; 0 (the default) is greedy, so scores repeat.
        seed: seeds the sampler of every reply (the same seed gives the same replies).
        force: replace an existing `out`.
        allow_mismatch: load an adapter whose stamp does not match the contract.
        root: contract root.
        progress: draw a progress bar on stderr.

    Returns:
        The `EvalReport`.

    Raises:
        DatasetError: no manifest, or an empty split.
        LockError: the dataset's contract changed since it was locked.
        ContractMismatchError: the adapter was trained on another contract or base model.
        ModelError: the model or adapter cannot be loaded.
        OutputExistsError: `out` exists and `force` is false.
    """
    from jarvis import __version__
    from jarvis.engine import ReplyEngine

    folder = Path(dataset)
    out = Path(out)
    if model is None:
        from jarvis.adapter import read_stamp
        from jarvis.errors import ModelError

        base = (read_stamp(adapter) or {}).get("base_model") if adapter is not None else None
        if not isinstance(base, str):
            raise ModelError("no model given, and no adapter stamp names its base model")
        model = base
    manifest, records = load_split(folder, split, limit)
    if sample is not None and sample < len(records):
        import random

        # The same fixed seed as `verify --sample`: the same N records on every run.
        records = random.Random(0).sample(records, sample)
    from jarvis.dataset import manifest_root

    root = manifest_root(manifest, root)
    contract = load_contract(str(manifest["contract"]["ref"]), root=root)
    reads: list[str | os.PathLike[str]] = [
        folder,
        model,
        contract.root,
        *([adapter] if adapter is not None else []),
    ]
    check_output(out, kind="eval-report", force=force, inputs=reads)
    runs: list[tuple[str, str | None]] = []
    if adapter is None or baseline:
        runs.append(("base", None))
    if adapter is not None:
        runs.append(("adapter", adapter))
    names = check_names(contract)
    limit_tokens = max_tokens or contract.spec.generation.max_tokens
    items = []
    for rid, tag, record in records:
        has_target = record.get(contract.target_field) is not None
        rendered = contract.messages(contract.validate(record), with_target=has_target)
        target = rendered[2]["content"] if has_target else ""
        items.append(Item(rid, tag, rendered[1]["content"], target))
    store = None
    requests = [record for _, _, record in records]
    retrieval = manifest.get("retrieval")
    if contract.retrieval is not None and isinstance(retrieval, dict):
        # Replies are prompted as at runtime: retrieved again from the dataset's store (for
        # valid and test records, exactly the exemplars their rows were rendered with).
        store = str(Path(folder) / str(retrieval["store"]))
        field = contract.retrieval.field
        requests = [{k: v for k, v in r.items() if k != field} for r in requests]
    for label, path in runs:
        engine = ReplyEngine(
            model, path, contract=contract, allow_mismatch=allow_mismatch, root=root,
            exemplars=store,
        )  # fmt: skip
        bar: Any = None
        if progress:
            import click

            bar = click.progressbar(length=len(items), label=f"eval {label}", file=sys.stderr)
            bar.render_progress()
        for item, reply in zip(
            items, _replies(engine, requests, limit_tokens, temperature, seed, bar), strict=True
        ):
            item.replies[label] = {
                "text": reply.text,
                "finish_reason": reply.finish_reason,
                "words": words(reply.text),
                "exact": bool(item.target) and normalise(reply.text) == normalise(item.target),
                "checks": [c.to_dict() for c in reply.checks],
                "generation_tokens": reply.generation_tokens,
            }
        if bar is not None:
            bar.render_finish()
        del engine
    length = contract_length(contract)
    data: dict[str, Any] = {
        "jarvis_version": __version__,
        "dataset": str(folder),
        "split": split,
        "records": len(items),
        "contract": {"ref": contract.ref, "fingerprint": contract.fingerprint},
        "model": str(model),
        "adapter": adapter,
        "generation": {"temperature": temperature, "max_tokens": limit_tokens, "seed": seed},
        "runs": {},
    }
    for label, path in runs:
        tags = sorted({i.tag for i in items})
        data["runs"][label] = {
            "adapter": path,
            "summary": score(items, label, names, length),
            "per_tag": {
                t: score([i for i in items if i.tag == t], label, names, length) for t in tags
            },
        }
    notes: list[str] = []
    chart: Path | None = None
    with atomic_dir(out, kind="eval-report", force=force, inputs=reads) as tmp:
        why = write_chart(data, tmp / CHART)
        if why is None:
            chart = out / CHART
        else:
            notes.append(why)
        data["chart"] = CHART if why is None else None
        data["notes"] = notes
        (tmp / REPORT_JSON).write_text(
            json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
        )
        (tmp / REPORT_MD).write_text(
            markdown(data, items, CHART if why is None else None), encoding="utf-8"
        )
        with (tmp / REPLIES).open("w", encoding="utf-8") as fh:
            for item in items:
                row = {"id": item.rid, "tag": item.tag, "target": item.target, **item.replies}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return EvalReport(out, data, chart, notes)
