"""`jarvis verify`: prove a rendered dataset still matches its contract, adapter and tokenizer.

Each check prints one line, `PASS name: detail` or `FAIL name: detail`. The checks are the
post-mortems' manual steps: is the manifest there, was the dataset rendered by the contract as
it is now, are the files intact, do rows re-render byte for byte, do the composition
thresholds hold, was the adapter trained on this dataset, and is the runtime prompt a token
prefix of every training row. Nothing here imports mlx.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jarvis.audit import AuditReport, Format, audit_chat_template, load_chat_template
from jarvis.contract import Contract, load_contract, read_lock
from jarvis.dataset import (
    MANIFEST,
    RECORDS,
    Recipe,
    RowRenderer,
    load_manifest,
    manifest_root,
)
from jarvis.errors import CheckFailedError, JarvisError, LockError
from jarvis.files import read_jsonl, sha256_and_lines, sha256_file
from jarvis.splits import SPLITS


@dataclass(frozen=True)
class Check:
    """One verification check and its outcome."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        """`PASS name: detail` or `FAIL name: detail`."""
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class VerifyResult:
    """Every check of one `jarvis verify` run, and the chat-template audit if one was asked for."""

    dataset: str | None = None
    checks: list[Check] = field(default_factory=list)
    audit: AuditReport | None = None

    @property
    def failed(self) -> list[Check]:
        """The failed checks (an incompatible audit counts as one)."""
        out = [c for c in self.checks if not c.passed]
        if self.audit is not None and not self.audit.compatible:
            errors = [f.check for f in self.audit.findings if f.severity == "error"]
            out.append(Check("chat-template", False, f"incompatible: {', '.join(errors)}"))
        return out

    @property
    def ok(self) -> bool:
        """True when every check passed and the audit (if any) is compatible."""
        return not self.failed

    def add(self, name: str, passed: bool, detail: str) -> Check:
        """Record one check."""
        check = Check(name, passed, detail)
        self.checks.append(check)
        return check

    def lines(self) -> list[str]:
        """The human report."""
        out: list[str] = []
        if self.dataset is not None:
            out.append(f"dataset: {self.dataset}")
            out += [c.line() for c in self.checks]
        if self.audit is not None:
            out += self.audit.lines()
        if self.dataset is None:
            return out  # the audit's verdict line is the summary
        failed = self.failed
        total = len(self.checks) + (self.audit is not None)
        if failed:
            out.append(
                f"{len(failed)} of {total} checks failed: {', '.join(c.name for c in failed)}"
            )
        else:
            out.append(f"ok: all {total} checks passed")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object `--json` prints."""
        return {
            "ok": self.ok,
            "dataset": self.dataset,
            "checks": [c.to_dict() for c in self.checks],
            "chat_template": self.audit.to_dict() if self.audit is not None else None,
            "failed": [c.name for c in self.failed],
        }

    def raise_for_failure(self) -> None:
        """Raise `CheckFailedError` (exit 1) naming the failed checks, if any."""
        failed = self.failed
        if self.dataset is None and self.audit is not None and failed:
            raise CheckFailedError(
                f"{self.audit.contract} cannot be trained and served through "
                f"{self.audit.template} without skew"
            )
        if failed:
            raise CheckFailedError(f"verification failed: {', '.join(c.name for c in failed)}")


# -- dataset checks --------------------------------------------------------------------------


def _version_key(key: str, version: int) -> str:
    """A part name without its version (`prompts/reply/vN/system.j2`)."""
    return key.replace(f"/v{version}/", "/vN/").replace(f"#versions.{version}", "#versions.N")


def _changed_parts(old: Contract, new: Contract) -> list[str]:
    """The parts that differ between two versions of a contract.

    A part both versions share under the same name (a `v1/` file that `v2/` still includes,
    the schema, the renderer) is compared as is; the rest are compared by their name
    without the version, so `v1/system.j2` and `v2/system.j2` line up.
    """
    a, b = dict(old.parts), dict(new.parts)
    for key in a.keys() & b.keys():
        if a[key] == b[key]:
            del a[key], b[key]
    left = {_version_key(k, old.version): h for k, h in a.items()}
    right = {_version_key(k, new.version): h for k, h in b.items()}
    return sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))


def _check_current(
    result: VerifyResult, rendered: Contract, serve: str | None, root: str | None
) -> None:
    """The dataset's contract version is the current one (the latest, or `serve`).

    Runtime prompts are built with the latest version unless the app pins one, so rows
    rendered under an older version would be served with prompts they were never trained on.
    """
    want = serve or rendered.name
    try:
        current = load_contract(want, root=root)
    except JarvisError as exc:
        result.add("contract", False, f"the current contract {want} cannot be loaded: {exc}")
        return
    if current.fingerprint == rendered.fingerprint:
        result.add(
            "contract",
            True,
            f"{rendered.ref} fingerprint {rendered.short_fingerprint} matches the manifest and "
            + (f"--contract {serve}" if serve else "is the latest version"),
        )
        return
    names = _changed_parts(rendered, current)
    changed = f" (changed: {', '.join(names)})" if names else ""
    result.add(
        "contract",
        False,
        f"fingerprint differs: the dataset was rendered under {rendered.ref} "
        f"{rendered.short_fingerprint}, but the current version is {current.ref} "
        f"{current.short_fingerprint}{changed}; prompts built with {current.ref} are not what "
        f"these rows trained on: re-render with --contract {current.ref}, or verify with "
        f"--contract {rendered.ref} if the app pins it",
    )


def check_contract(
    result: VerifyResult,
    manifest: Mapping[str, Any],
    root: str | None,
    serve: str | None = None,
) -> Contract | None:
    """Compare the manifest's contract fingerprint with the contract as it is now.

    The recorded version must be unchanged, and it must be the current version: the latest
    version of that contract, or `serve` (the version the app serves with) when given.

    Returns:
        The current contract (loaded without the lock check when the lock refuses it), so
        the later checks can still re-render; None when it cannot be loaded at all.
    """
    info = manifest.get("contract") or {}
    ref = str(info.get("ref") or f"{info.get('name')}@{info.get('version')}")
    recorded = str(info.get("fingerprint", ""))
    try:
        contract = load_contract(ref, root=root)
    except LockError as exc:
        fallback: Contract | None
        try:
            fallback = load_contract(ref, root=root, enforce_lock=False)
        except JarvisError:
            fallback = None
        now = fallback.short_fingerprint if fallback is not None else "unknown"
        result.add(
            "contract",
            False,
            f"fingerprint differs: the dataset was rendered under {ref} {recorded[:12]}, "
            f"{ref} is now {now}; {exc}",
        )
        return fallback
    except JarvisError as exc:
        result.add("contract", False, f"{ref}: {exc}")
        return None
    if contract.fingerprint == recorded:
        _check_current(result, contract, serve, root)
        return contract
    entry = read_lock(contract.root).get(ref, {})
    changed = ""
    if entry.get("fingerprint") == recorded:
        parts = entry.get("parts", {})
        names = sorted(
            k for k in parts.keys() | contract.parts.keys() if parts.get(k) != contract.parts.get(k)
        )
        changed = f" (changed: {', '.join(names)})" if names else ""
    result.add(
        "contract",
        False,
        f"fingerprint differs: the dataset was rendered under {ref} "
        f"{recorded[:12]}, the contract is now {contract.short_fingerprint}{changed}",
    )
    return contract


def check_files(result: VerifyResult, folder: Path, manifest: Mapping[str, Any]) -> None:
    """Each file the manifest lists has its sha256 and row count; no split file is unlisted."""
    files: Mapping[str, Any] = manifest.get("files") or {}
    problems: list[str] = []
    for name, meta in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        digest, count = sha256_and_lines(path)  # every row ends in "\n": lines == rows
        if digest != meta.get("sha256"):
            problems.append(
                f"{name} sha256 {digest[:12]} != manifest {str(meta.get('sha256'))[:12]}"
            )
        rows = meta.get("rows") if name.endswith(".jsonl") else None  # the store is SQLite
        if rows is not None and count != rows:
            problems.append(f"{name} has {count} rows, manifest says {rows}")
    for split in SPLITS:
        name = f"{split}.jsonl"
        if (folder / name).is_file() and name not in files:
            problems.append(f"{name} is not listed in the manifest")
    if problems:
        result.add("files", False, "; ".join(problems))
    else:
        result.add("files", True, f"{len(files)} files match their sha256 and row counts")


def check_adapter_stamp(
    result: VerifyResult,
    adapter: str,
    folder: Path,
    manifest: Mapping[str, Any],
    contract: Contract | None,
) -> None:
    """The adapter's `jarvis` block names this dataset's manifest and contract; its weights
    are finite."""
    from jarvis.adapter import check_adapter_weights, check_stamp, read_stamp

    try:
        check_adapter_weights(adapter)
    except JarvisError as exc:
        result.add("adapter-weights", False, str(exc))
    else:
        result.add("adapter-weights", True, "every adapter tensor is finite")
    try:
        stamp = read_stamp(adapter)
    except JarvisError as exc:
        result.add("adapter", False, str(exc))
        return
    if stamp is None:
        result.add(
            "adapter",
            False,
            f"{adapter} has no jarvis stamp: nothing ties it to this "
            "dataset; train it with `jarvis train`",
        )
        return
    problems: list[str] = []
    if contract is not None:
        found, _ = check_stamp(stamp, contract, where=f"adapter {adapter}")
        problems += found
    recorded = str((manifest.get("contract") or {}).get("fingerprint", ""))
    if stamp.get("fingerprint") != recorded:
        problems.append(
            f"the adapter was trained under fingerprint "
            f"{str(stamp.get('fingerprint'))[:12]}, the dataset has {recorded[:12]}"
        )
    manifest_sha = sha256_file(folder / MANIFEST)
    stamped = stamp.get("dataset_manifest_sha256")
    if stamped != manifest_sha:
        problems.append(
            f"the adapter was trained on a dataset with manifest sha256 "
            f"{str(stamped)[:12]}, this one is {manifest_sha[:12]}"
        )
    if problems:
        result.add("adapter", False, "; ".join(dict.fromkeys(problems)))
    else:
        result.add(
            "adapter",
            True,
            f"{adapter} was trained on this dataset (manifest "
            f"{manifest_sha[:12]}) under {stamp.get('ref') or contract and contract.ref}",
        )


def _show_tokens(tokenizer: Any, ids: Sequence[int], at: int, width: int = 4) -> str:
    window = list(ids[max(0, at - width) : at + width])
    return f"{window} {tokenizer.decode(window)!r}"


def check_token_prefix(
    result: VerifyResult,
    tokenizer_path: str,
    contract: Contract,
    items: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
) -> None:
    """The runtime prompt's tokens are a prefix of each training row's tokens.

    Args:
        items: `(where, record, row)`: the row as written and the record it came from.
    """
    from jarvis.chat import (
        apply_chat_template,
        has_thinking,
        load_tokenizer,
        mlx_row_tokens,
        special_tokens,
        token_prefix_divergence,
    )

    tok = load_tokenizer(tokenizer_path)
    thinking = has_thinking(tok)
    policy = contract.special_token_policy(special_tokens(tok))
    failures: list[str] = []
    for where, record, row in items:
        try:
            model = contract.validate(
                {k: v for k, v in record.items() if k != contract.target_field}
            )
            prompt_msgs = contract.messages(model, with_target=False, policy=policy)
        except JarvisError as exc:
            failures.append(f"{where}: {exc}")
            continue
        prompt = apply_chat_template(
            tok, prompt_msgs, add_generation_prompt=True, tokenize=True, enable_thinking=thinking
        )
        full = mlx_row_tokens(tok, row, enable_thinking=thinking)
        at = token_prefix_divergence(prompt, full)
        if at is not None:
            failures.append(
                f"{where}: first divergence at token {at}: runtime prompt "
                f"{_show_tokens(tok, prompt, at)} vs training row {_show_tokens(tok, full, at)}"
            )
    if failures:
        more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
        result.add(
            "token-prefix",
            False,
            f"{len(failures)} of {len(items)} rows: " + "; ".join(failures[:3]) + more,
        )
    else:
        result.add(
            "token-prefix",
            True,
            f"the runtime prompt's tokens are a prefix of all "
            f"{len(items)} rows' tokens ({Path(tokenizer_path).name})",
        )


@dataclass
class _Entry:
    """One unique record of `records.jsonl` and every row written for it."""

    rid: str
    split: str
    tag: str
    record: dict[str, Any]
    rows: list[tuple[str, bytes]] = field(default_factory=list)  # (file:line, bytes)


@dataclass
class _Data:
    entries: dict[str, _Entry]
    orphans: list[str]  # rows whose id is not in records.jsonl
    bad: list[str]  # unparseable lines


def _load_data(folder: Path) -> _Data | str:
    """Read records.jsonl and the split files; a string explains why that was impossible."""
    records = folder / RECORDS
    if not records.is_file():
        return "records.jsonl is missing, so rows cannot be re-rendered"
    entries: dict[str, _Entry] = {}
    bad: list[str] = []
    for n, _raw, item in read_jsonl(records):
        if not isinstance(item, dict) or not isinstance(item.get("record"), dict):
            bad.append(f"records.jsonl:{n}")
            continue
        rid = str(item.get("id"))
        entries[rid] = _Entry(rid, str(item.get("split")), str(item.get("tag")), item["record"])
    orphans: list[str] = []
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            continue
        for n, raw, row in read_jsonl(path):
            where = f"{split}.jsonl:{n}"
            if not isinstance(row, dict):
                bad.append(where)
                continue
            entry = entries.get(str(row.get("id")))
            if entry is None:
                orphans.append(where)
            else:
                entry.rows.append((where, raw.rstrip("\n").encode("utf-8")))
    return _Data(entries, orphans, bad)


def _sample(entries: Sequence[_Entry], sample: int | None) -> list[_Entry]:
    if sample is None or sample >= len(entries):
        return list(entries)
    # A fixed seed: the same --sample N checks the same rows on every run.
    return random.Random(0).sample(list(entries), sample)


def _renderer(contract: Contract, manifest: Mapping[str, Any]) -> RowRenderer:
    """The dataset module's row renderer, configured by the manifest's recipe."""
    recipe = Recipe.model_validate(manifest["recipe"])
    return RowRenderer(contract, recipe)


def check_rows(
    result: VerifyResult,
    contract: Contract,
    manifest: Mapping[str, Any],
    data: _Data,
    chosen: Sequence[_Entry],
) -> None:
    """Re-render each chosen record and compare it with every row written for it, byte for byte."""
    problems: list[str] = [f"{w}: not valid JSON" for w in data.bad[:3]]
    problems += [f"{w}: id is not in records.jsonl" for w in data.orphans[:3]]
    try:
        renderer = _renderer(contract, manifest)
    except JarvisError as exc:
        result.add("rows", False, f"cannot re-render rows: {exc}")
        return
    differ = rows = 0
    for entry in chosen:
        if not entry.rows:
            problems.append(f"record {entry.rid} ({entry.split}) has no row in {entry.split}.jsonl")
            continue
        try:
            expected = renderer.render(contract.validate(entry.record), entry.rid)[0]
        except JarvisError as exc:
            problems.append(f"record {entry.rid}: cannot be rendered: {exc}")
            continue
        for where, raw in entry.rows:
            rows += 1
            if raw != expected:
                differ += 1
                if differ <= 3:
                    at = next(
                        (i for i, (x, y) in enumerate(zip(raw, expected, strict=False)) if x != y),
                        min(len(raw), len(expected)),
                    )
                    lo = max(0, at - 30)
                    problems.append(
                        f"{where} differs from its re-rendering at byte {at}: "
                        f"{raw[lo : at + 30].decode('utf-8', 'replace')!r} vs "
                        f"{expected[lo : at + 30].decode('utf-8', 'replace')!r}"
                    )
    if differ > 3:
        problems.append(f"{differ - 3} more rows differ")
    scope = f"{len(chosen)} of {len(data.entries)} records"
    if problems:
        result.add("rows", False, f"{scope}, {rows} rows: " + "; ".join(problems))
    else:
        result.add("rows", True, f"{rows} rows ({scope}) re-render byte for byte")


def check_exemplars(
    result: VerifyResult,
    folder: Path,
    contract: Contract,
    manifest: Mapping[str, Any],
    chosen: Sequence[_Entry],
    train_ids: set[str],
) -> None:
    """Re-retrieve each chosen record's exemplars from the dataset's store; any difference fails.

    Train records leave themselves out (as render-dataset did); the store itself must hold
    train records only and match the manifest's fingerprint.
    """
    info = manifest.get("retrieval")
    if contract.retrieval is None or not isinstance(info, dict):
        return
    from jarvis.rag.retrieve import open_store, retrieve

    field = contract.retrieval.field
    try:
        store = open_store(contract, folder / str(info.get("store")))
    except JarvisError as exc:
        result.add("exemplars", False, str(exc))
        return
    with store:
        if store.fingerprint != info.get("fingerprint"):
            result.add(
                "exemplars", False,
                f"{store.path.name}: fingerprint {store.fingerprint[:12]} is not the manifest's "
                f"{str(info.get('fingerprint'))[:12]} (the store changed since rendering)",
            )  # fmt: skip
            return
        problems: list[str] = []
        for entry in chosen:
            train = entry.split == "train"
            got = retrieve(contract, store, entry.record, leave_out=entry.rid if train else None)
            if got != (entry.record.get(field) or []):
                problems.append(f"record {entry.rid} ({entry.split})")
        leaked = [e.id for e in store.exemplars() if e.id not in train_ids]
    if problems or leaked:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        found = ["re-retrieval differs for " + ", ".join(problems[:3]) + more] if problems else []
        if leaked:
            found.append(
                f"the store holds {len(leaked)} exemplars not from the train split "
                f"(e.g. {leaked[0]!r})"
            )
        result.add("exemplars", False, "; ".join(found))
    else:
        result.add(
            "exemplars", True,
            f"{len(chosen)} records re-retrieve the same exemplars; the store "
            f"({store.count} exemplars) holds train records only",
        )  # fmt: skip


def check_composition(
    result: VerifyResult, contract: Contract, manifest: Mapping[str, Any], data: _Data
) -> None:
    """Recount the written rows per split and tag, and re-check the recipe's thresholds."""
    from jarvis.checks import run_checks

    recipe: Mapping[str, Any] = manifest.get("recipe") or {}
    splits: Mapping[str, Any] = manifest.get("splits") or {}
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    passed = 0
    for entry in data.entries.values():
        if not entry.rows:
            continue
        split = entry.rows[0][0].split(".", 1)[0]
        counts[split][entry.tag] = counts[split].get(entry.tag, 0) + len(entry.rows)
        if split == "train" and contract.spec.checks:
            try:
                model = contract.validate(entry.record)
                target = contract.messages(model, with_target=True)[-1]["content"]
            except JarvisError:
                continue
            if all(r.passed for r in run_checks(target, contract.spec.checks)):
                passed += len(entry.rows)
    problems: list[str] = []
    for split in SPLITS:
        have = sum(counts[split].values())
        if split in splits and splits[split].get("rows") != have:
            problems.append(
                f"{split} has {have} rows, the manifest says {splits[split].get('rows')}"
            )
    batch = int(recipe.get("min_split_rows") or recipe.get("batch_size") or 1)
    shares = recipe.get("split") or (1, 1, 1)
    for i, split in enumerate(SPLITS):
        have = sum(counts[split].values())
        if (i == 0 or shares[i]) and have < batch:
            problems.append(f"{split} has {have} rows, fewer than min_split_rows {batch}")
    train = sum(counts["train"].values())
    details = [f"train {train} rows"]
    for tag, ratio in sorted((recipe.get("min_ratio") or {}).items()):
        have = counts["train"].get(tag, 0)
        share = have / train if train else 0.0
        details.append(f"{tag} {share:.1%} (min {ratio:.1%})")
        if share < ratio:
            problems.append(
                f"tag {tag!r} is {share:.2%} of train ({have} of {train} rows), "
                f"below min_ratio {ratio:g}"
            )
    minimum = recipe.get("min_compliant")
    if contract.spec.checks:
        share = passed / train if train else 0.0
        details.append(f"compliant {share:.1%}" + (f" (min {minimum:.1%})" if minimum else ""))
        if minimum is not None and share < minimum:
            problems.append(
                f"{share:.2%} of training rows pass every output check, below "
                f"min_compliant {minimum:g}"
            )
    if problems:
        result.add("composition", False, "; ".join(problems))
    else:
        result.add("composition", True, ", ".join(details))


def verify_dataset(
    folder: str | os.PathLike[str],
    *,
    adapter: str | None = None,
    tokenizer: str | None = None,
    sample: int | None = None,
    root: str | None = None,
    serve: str | None = None,
    result: VerifyResult | None = None,
) -> VerifyResult:
    """Run every dataset check and return the result (never raises for a failed check).

    Args:
        folder: a dataset folder written by `jarvis render-dataset`.
        adapter: an adapter folder whose stamp must name this dataset and contract.
        tokenizer: a model or tokenizer folder for the token-prefix check.
        sample: re-render (and tokenize) this many records, chosen at random with a fixed
            seed; default all.
        root: contract root.
        serve: the contract version the app serves with (default: the latest version).
        result: a result to add the checks to.

    Returns:
        The `VerifyResult`; `ok` is False when any check failed.
    """
    path = Path(folder)
    result = result or VerifyResult()
    result.dataset = str(path)
    try:
        manifest = load_manifest(path)
    except JarvisError as exc:
        result.add("manifest", False, str(exc))
        return result
    info = manifest.get("contract") or {}
    result.add(
        "manifest",
        True,
        f"jarvis {manifest.get('jarvis_version')}, contract "
        f"{info.get('ref')} {str(info.get('fingerprint'))[:12]}, format "
        f"{manifest.get('format')}",
    )
    root = manifest_root(manifest, root)
    contract = check_contract(result, manifest, root, serve)
    check_files(result, path, manifest)
    data = _load_data(path)
    if isinstance(data, str):
        result.add("rows", False, data)
    elif contract is not None:
        chosen = _sample(list(data.entries.values()), sample)
        check_rows(result, contract, manifest, data, chosen)
        train_ids = {e.rid for e in data.entries.values() if e.split == "train"}
        check_exemplars(result, path, contract, manifest, chosen, train_ids)
        check_composition(result, contract, manifest, data)
        if tokenizer is not None:
            items = [(e.rows[0][0], e.record, json.loads(e.rows[0][1])) for e in chosen if e.rows]
            try:
                check_token_prefix(result, tokenizer, contract, items)
            except JarvisError as exc:
                result.add("token-prefix", False, str(exc))
    if adapter is not None:
        check_adapter_stamp(result, adapter, path, manifest, contract)
    return result


def run_verify(
    dataset: str | None,
    *,
    adapter: str | None = None,
    tokenizer: str | None = None,
    sample: int | None = None,
    chat_template: str | None = None,
    contract: str | None = None,
    fmt: str | None = None,
    root: str | None = None,
) -> VerifyResult:
    """What `jarvis verify` runs: dataset checks, a chat-template audit, or both.

    Raises:
        ContractError, ModelError: the audit's contract or template cannot be loaded.
    """
    result = VerifyResult()
    manifest: Mapping[str, Any] = {}
    if dataset is not None:
        verify_dataset(
            dataset,
            adapter=adapter,
            tokenizer=tokenizer,
            sample=sample,
            root=root,
            serve=contract,
            result=result,
        )
        if chat_template is not None and contract is None:
            try:
                manifest = load_manifest(Path(dataset))
            except JarvisError:
                manifest = {}
    if chat_template is not None:
        template = load_chat_template(chat_template)
        ref = contract or str((manifest.get("contract") or {}).get("ref") or "reply")
        loaded = load_contract(ref, root=root)
        from jarvis.diff import sample_records

        records = [r for _, r in sample_records(loaded)]
        chosen = fmt or str(manifest.get("format") or "chat")
        if chosen not in ("chat", "text"):
            chosen = "chat"
        audit_fmt: Format = "text" if chosen == "text" else "chat"
        result.audit = audit_chat_template(template, loaded, records, fmt=audit_fmt)
    return result
