"""`jarvis diff A B`: render the same inputs two ways and show what differs, as a unified diff.

Each side is a contract ref (`reply@1`) or a dataset folder. A dataset side renders its own
records (`records.jsonl`) with the contract in its manifest; two contract refs use the built-in
sample inputs of their schema. The post-mortems' side-by-side comparison of the training prompt
and the inference prompt becomes one command.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jarvis.chat import chatml
from jarvis.contract import Contract, load_contract
from jarvis.errors import CheckFailedError, ContractError, InputError, JarvisError, LockError
from jarvis.files import read_jsonl, read_text

# Golden sample inputs per schema: enough to exercise every template branch of the bundled
# contracts (a thread, several senders, exemplars, an optional input, non-ASCII text).
SAMPLES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "ReplyInput": [
        (
            "short",
            {"messages": [{"sender": "Sam", "text": "you coming tonight?"}], "reply": "yea omw"},
        ),
        (
            "thread",
            {
                "messages": [
                    {"sender": "+14025550101", "text": "Will be back jan"},
                    {"sender": "+14025550101", "text": "We gotto pay rent"},
                    {"sender": "Jwalin", "text": "yea u right"},
                ],
                "reply": "what's the split on the 1905",
            },
        ),
        (
            "retrieved",
            {
                "messages": [{"sender": "Zoë", "text": "dinner at 8? 🍝"}],
                "retrieved": [
                    {"message": "lunch tmrw?", "reply": "ya 1pm works"},
                    {"message": "wanna get food later", "reply": "down, where"},
                ],
                "reply": "ya where",
            },
        ),
    ],
    "CodegenInput": [
        (
            "short",
            {"instruction": "Add two numbers.", "output": "def add(a, b):\n    return a + b"},
        ),
        (
            "with-input",
            {
                "instruction": "Reverse a string.",
                "input": "s = 'naïve'",
                "output": "def rev(s):\n    return s[::-1]",
            },
        ),
    ],
}


SAMPLES_FILE = "samples.jsonl"


def sample_records(contract: Contract) -> list[tuple[str, dict[str, Any]]]:
    """Return the `(name, record)` sample inputs used to diff or audit a contract.

    A contract's own `prompts/<name>/samples.jsonl` (one record per line; outside the version
    folders, so not part of any fingerprint) comes first; else the built-in samples of its
    schema.

    Raises:
        ContractError: neither exists, or the file is malformed.
    """
    path = contract.root / "prompts" / contract.name / SAMPLES_FILE
    if path.is_file():
        samples: list[tuple[str, dict[str, Any]]] = []
        for number, line in enumerate(read_text(path, ContractError).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ContractError(f"{path}:{number}: invalid JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise ContractError(f"{path}:{number}: expected a JSON object")
            samples.append((str(record.get("id") or f"line{number}"), record))
        if samples:
            return samples
    builtin = SAMPLES.get(contract.schema.__name__)
    if builtin is None:
        raise ContractError(
            f"{contract.ref}: no sample inputs for schema {contract.schema.__name__}: add a few "
            f"records to {path}, or compare against a dataset folder rendered with it"
        )
    return builtin


@dataclass(frozen=True)
class Side:
    """One side of a diff: a label, its contract and (for a dataset folder) its records.

    Attributes:
        label: what the user typed (a ref, or the folder's name).
        contract: the contract that renders this side.
        records: `(id, record)` pairs from the dataset's `records.jsonl`, or None for a ref.
        rows: for a dataset, the chat messages actually written for each id (what was trained).
        note: a remark about how the side was loaded (e.g. its contract changed since).
    """

    label: str
    contract: Contract
    records: list[tuple[str, dict[str, Any]]] | None = None
    rows: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    note: str = ""
    retrieval: dict[str, Any] | None = None  # a dataset's manifest `retrieval` block

    def exemplars(self, rid: str, record: Mapping[str, Any]) -> list[Any] | None:
        """The RAG block this side gives input `rid`: its own record's for a dataset."""
        name = self.contract.rag_field
        if name is None:
            return None
        if self.records is not None:
            own = self._by_id.get(rid)
            return None if own is None else list(own.get(name) or [])
        return list(record.get(name) or [])

    @cached_property
    def _by_id(self) -> dict[str, dict[str, Any]]:
        return dict(self.records or [])


def is_dataset_dir(spec: str) -> bool:
    """True when `spec` names a folder holding a `manifest.json`."""
    from jarvis.dataset import MANIFEST

    return (Path(spec) / MANIFEST).is_file()


def load_dataset_side(
    folder: str | os.PathLike[str], *, root: str | None = None, label: str | None = None
) -> Side:
    """Load a dataset folder as a diff side: its records, rows and the contract in its manifest.

    The contract is loaded without the lock check so that a dataset whose contract has since
    been edited can still be compared; `note` then says so.

    Raises:
        DatasetError: the manifest is missing or malformed.
        InputError: `records.jsonl` is missing or malformed.
    """
    from jarvis.dataset import load_manifest, manifest_root, read_records
    from jarvis.splits import SPLITS

    path = Path(folder)
    manifest = load_manifest(path)
    info = manifest["contract"]
    contract = load_contract(
        str(info["ref"]), root=manifest_root(manifest, root), enforce_lock=False
    )
    note = ""
    if contract.fingerprint != info.get("fingerprint"):
        note = (
            f"{path.name}: rendered under {info['ref']} {str(info.get('fingerprint'))[:12]}, "
            f"which is now {contract.short_fingerprint}"
        )
    records = [(str(r.get("id")), dict(r["record"])) for r in read_records(path, manifest)]
    rows: dict[str, list[dict[str, str]]] = {}
    for split in SPLITS:
        split_path = path / f"{split}.jsonl"
        if not split_path.is_file():
            continue
        for number, raw, row in read_jsonl(split_path):
            if row is None and raw.strip():
                raise InputError(f"{split_path}:{number}: invalid JSON")
            if isinstance(row, dict) and "messages" in row and "id" in row:
                rows.setdefault(str(row["id"]), row["messages"])
    retrieval = manifest.get("retrieval")
    return Side(
        label or str(path), contract, records, rows, note,
        retrieval if isinstance(retrieval, dict) else None,
    )  # fmt: skip


def load_side(spec: str, *, root: str | None = None) -> Side:
    """Load `spec` (a contract ref or a dataset folder) as a diff side."""
    if is_dataset_dir(spec):
        return load_dataset_side(spec, root=root, label=spec.rstrip("/") or spec)
    if Path(spec).is_dir():
        raise InputError(f"{spec}: a folder without a manifest.json is not a dataset")
    try:
        return Side(spec, load_contract(spec, root=root))
    except LockError as exc:
        # Showing an in-place edit is the point of a diff: load it anyway and say so.
        return Side(spec, load_contract(spec, root=root, enforce_lock=False), note=str(exc))


@dataclass
class DiffReport:
    """The outcome of a diff: unified-diff blocks per section and counts.

    Attributes:
        a: label of side A; b: label of side B.
        inputs: number of inputs rendered both ways.
        blocks: unified diff text blocks, in order (system, then per input user and chat).
        differing: section name -> number of inputs (or 1 for the system prompt) that differ.
        notes: remarks printed before the diff.
        omitted: what was left out of `blocks` (repeated or over the `show` limit).
    """

    a: str
    b: str
    inputs: int = 0
    blocks: list[list[str]] = field(default_factory=list)
    differing: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        """True when any section differs."""
        return any(self.differing.values())

    def summary(self) -> str:
        """One line naming what differs, e.g. `system prompt, chat string (3 of 3 inputs)`."""
        parts = []
        for name, count in self.differing.items():
            if not count:
                continue
            parts.append(
                name
                if name in ("system prompt", "schema")
                else f"{name} ({count} of {self.inputs} inputs)"
            )
        return ", ".join(parts)


def _unified(a: str, b: str, label_a: str, label_b: str) -> list[str]:
    lines = difflib.unified_diff(
        a.splitlines(), b.splitlines(), f"a/{label_a}", f"b/{label_b}", lineterm="", n=3
    )
    return list(lines)


def _changes(block: Sequence[str]) -> tuple[str, ...]:
    return tuple(line for line in block[2:] if line[:1] in "+-")


def _render(side: Side, rid: str, record: Mapping[str, Any]) -> list[dict[str, str]]:
    if rid in side.rows:
        return [dict(m) for m in side.rows[rid]]
    c = side.contract
    return c.messages(c.validate(record), with_target=c.target_field in record)


def diff_sides(a: Side, b: Side, *, template: Any | None = None, show: int = 5) -> DiffReport:
    """Render the same inputs with both sides and collect unified diffs of what differs.

    Args:
        a: side A; b: side B.
        template: an `audit.ChatTemplate` to render the final string with (default ChatML).
        show: print at most this many user and chat diffs each (the counts cover all inputs).

    Returns:
        A `DiffReport`; `differs` is True when anything differs.
    """
    report = DiffReport(a.label, b.label)
    report.notes = [n for n in (a.note, b.note) if n]
    sa, sb = a.contract.system_prompt, b.contract.system_prompt
    system = _unified(sa, sb, f"{a.label}:system", f"{b.label}:system")
    report.differing["system prompt"] = int(bool(system))
    if system:
        report.blocks.append(system)
    if a.contract.schema is not b.contract.schema and a.records is None and b.records is None:
        report.notes.append(
            f"schemas differ: {a.contract.ref} takes {a.contract.schema.__name__}, "
            f"{b.contract.ref} takes {b.contract.schema.__name__}; no input renders both ways"
        )
        report.differing["schema"] = 1
        return report
    inputs = a.records if a.records is not None else b.records
    if inputs is None:
        inputs = sample_records(a.contract)
    report.inputs = len(inputs)
    report.differing["user content"] = 0
    report.differing["chat string"] = 0
    seen: dict[tuple[str, ...], str] = {}
    shown = {"user content": 0, "chat string": 0}
    same = dict.fromkeys(shown, 0)
    over = dict.fromkeys(shown, 0)
    exemplar_changes = 0
    for rid, record in inputs:
        try:
            ma, mb = _render(a, rid, record), _render(b, rid, record)
        except JarvisError as exc:
            report.notes.append(f"input {rid}: cannot be rendered both ways: {exc}")
            report.differing["unrenderable"] = report.differing.get("unrenderable", 0) + 1
            continue
        ua, ub = ma[1]["content"], mb[1]["content"]
        if template is not None:
            fa = template.render(ma, add_generation_prompt=len(ma) < 3)
            fb = template.render(mb, add_generation_prompt=len(mb) < 3)
        else:
            fa = chatml(ma, add_generation_prompt=len(ma) < 3)
            fb = chatml(mb, add_generation_prompt=len(mb) < 3)
        for name, key, x, y in (("user content", "user", ua, ub), ("chat string", "chat", fa, fb)):
            block = _unified(x, y, f"{a.label}:{key}[{rid}]", f"{b.label}:{key}[{rid}]")
            if not block:
                continue
            report.differing[name] += 1
            changes = (name, *_changes(block))
            if changes in seen:
                # The same change as an earlier input (e.g. a new system prompt): count it once.
                same[name] += 1
                continue
            seen[changes] = rid
            if shown[name] < show:
                shown[name] += 1
                report.blocks.append(block)
            else:
                over[name] += 1
        ea, eb = a.exemplars(rid, record), b.exemplars(rid, record)
        if (ea is not None or eb is not None) and (ea or []) != (eb or []):
            exemplar_changes += 1
    if exemplar_changes or a.retrieval or b.retrieval:
        report.differing["exemplars"] = exemplar_changes
        report.notes.append(_exemplar_note(a, b, exemplar_changes, len(inputs)))
    for name in shown:
        if same[name]:
            report.omitted.append(
                f"{same[name]} more input(s) have a {name} diff identical to one shown above"
            )
        if over[name]:
            report.omitted.append(f"{over[name]} more {name} diff(s) not shown (over --show)")
    return report


def _exemplar_note(a: Side, b: Side, changed: int, inputs: int) -> str:
    """One line on the RAG blocks: how many inputs' exemplars differ, and each side's store."""

    def store(side: Side) -> str:
        r = side.retrieval
        if r is None:
            return f"{side.label}: no exemplar store"
        return f"{side.label}: {r.get('exemplars')} exemplars ({str(r.get('fingerprint'))[:12]})"

    return f"exemplars: {changed} of {inputs} inputs differ; {store(a)}; {store(b)}"


def _style(line: str) -> str:
    import click

    if line.startswith(("---", "+++")):
        return click.style(line, bold=True)
    if line.startswith("@@"):
        return click.style(line, fg="cyan")
    if line.startswith("-"):
        return click.style(line, fg="red")
    if line.startswith("+"):
        return click.style(line, fg="green")
    return line


def report_lines(report: DiffReport) -> list[str]:
    """The plain text `jarvis diff` prints: notes, unified diffs, then a summary line."""
    out = [f"# {note}" for note in report.notes]
    for block in report.blocks:
        out += block
    out += [f"# {line}" for line in report.omitted]
    if report.differs:
        out.append(f"# {report.a} and {report.b} differ: {report.summary()}")
    else:
        out.append(
            f"# {report.a} and {report.b} render identical system prompts, user contents and "
            f"chat strings for {report.inputs} inputs"
        )
    return out


def print_report(report: DiffReport) -> None:
    """Print the report (coloured when stdout is a terminal).

    Raises:
        CheckFailedError: the sides differ (exit 1, like diff(1)).
    """
    import sys

    import click

    color = sys.stdout.isatty()
    for line in report_lines(report):
        click.echo(_style(line) if color else line)
    if report.differs:
        raise CheckFailedError(f"{report.a} and {report.b} differ")
