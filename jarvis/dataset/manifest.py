"""The manifest (what was rendered, from what, with which shares and hashes), reading a dataset
folder back, and the printed summary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from jarvis.contract import Contract
from jarvis.dataset.plan import SplitPlan, split_summary
from jarvis.dataset.recipe import MANIFEST, RECORDS, REJECTS, Recipe
from jarvis.dataset.records import PassOneState
from jarvis.errors import (
    DatasetError,
    InputError,
)
from jarvis.files import read_jsonl, sha256_file
from jarvis.inputs import InputSpec
from jarvis.splits import SPLITS


def build_manifest(
    recipe: Recipe,
    contract: Contract,
    state: PassOneState,
    plan: SplitPlan,
    files: dict[str, dict[str, Any]],
    version: str,
) -> dict[str, Any]:
    """The manifest of a render: its recipe, contract, inputs, splits and `files` written,
    stamped with jarvis's `version`."""
    tokens = recipe.tokenizer is not None
    splits = {
        name: split_summary(recipe, contract, state, plan, s, tokens)
        for s, name in enumerate(SPLITS)
        if f"{name}.jsonl" in files
    }
    return {
        "jarvis_version": version,
        "contract": {
            "name": contract.name,
            "version": contract.version,
            "ref": contract.ref,
            "fingerprint": contract.fingerprint,
            "root": str(contract.root),
        },
        "format": recipe.format,
        "recipe": _stored_recipe(recipe, contract),
        "inputs": [
            {
                "path": i.path,
                "tag": i.tag,
                "sha256": i.sha256,
                "records": i.records,
                "accepted": i.accepted,
                "rejected": i.rejected,
                "duplicates": i.duplicates,
            }
            for i in state.inputs
        ],
        "records": {"read": state.total, "unique": len(state.tag_of)},
        "splits": splits,
        "files": files,
        "duplicates": state.duplicates,
        "rejects": state.reject_count,
        "rejects_overlength": state.overlength,
    }


def _stored_recipe(recipe: Recipe, contract: Contract) -> dict[str, Any]:
    """The recipe as the manifest stores it: input and local tokenizer paths made absolute,
    so `Recipe.build(**manifest["recipe"])` rebuilds the dataset from any working folder."""
    data = recipe.model_dump(mode="json")
    data["root"] = str(contract.root)
    data["inputs"] = [
        str(InputSpec(os.path.abspath(spec.path), spec.tag)) for spec in recipe.input_specs()
    ]
    if recipe.tokenizer is not None and Path(recipe.tokenizer).exists():
        data["tokenizer"] = os.path.abspath(recipe.tokenizer)
    return data


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """`manifest.json`'s bytes: indented, keys sorted, one final newline."""
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def read_records(
    dataset_dir: str | os.PathLike[str], manifest: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Return the entries of a dataset's `records.jsonl`: `{"id", "split", "tag", "record"}`.

    Args:
        dataset_dir: a folder written by render-dataset.
        manifest: its manifest; when given, the file must have the sha256 it records.

    Raises:
        InputError: the file is missing, or a line is not such an entry (names file:line).
        DatasetError: the file changed since it was rendered.
    """
    path = Path(dataset_dir) / RECORDS
    if not path.is_file():
        raise InputError(f"{path}: missing; re-render the dataset with `jarvis render-dataset`")
    if manifest is not None:
        recorded = (manifest.get("files") or {}).get(RECORDS, {}).get("sha256")
        if recorded != sha256_file(path):
            raise DatasetError(
                f"{path}: changed since it was rendered (sha256 differs from the manifest); "
                "re-render the dataset with `jarvis render-dataset`"
            )
    entries: list[dict[str, Any]] = []
    for number, raw, item in read_jsonl(path):
        if not raw.strip():
            continue
        if not isinstance(item, dict) or not isinstance(item.get("record"), dict):
            raise InputError(f"{path}:{number}: not a records.jsonl entry")
        entries.append(item)
    return entries


def load_manifest(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a rendered dataset's manifest, refusing a folder mlx-lm could not train on.

    Args:
        dataset_dir: a folder written by `render-dataset`.

    Returns:
        The manifest dict.

    Raises:
        DatasetError: the folder is missing or empty, has no or a malformed `manifest.json`,
            or `train.jsonl` is missing or empty.
    """
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such dataset folder; run `jarvis render-dataset`")
    if not any(folder.iterdir()):
        raise DatasetError(f"{folder}: the dataset folder is empty; run `jarvis render-dataset`")
    path = folder / MANIFEST
    if not path.is_file():
        raise DatasetError(
            f"{folder}: no {MANIFEST}; not a folder written by `jarvis render-dataset`"
        )
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed manifest: {exc}") from exc
    required = ("jarvis_version", "contract", "format", "recipe", "splits", "files")
    missing = [k for k in required if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise DatasetError(f"{path}: malformed manifest: missing {', '.join(missing)}")
    contract = manifest["contract"]
    if not isinstance(contract, dict) or not {"name", "version", "fingerprint"} <= contract.keys():
        raise DatasetError(f"{path}: malformed manifest: contract needs name, version, fingerprint")
    files = manifest["files"]
    if not isinstance(files, dict) or not isinstance(manifest["splits"], dict):
        raise DatasetError(f"{path}: malformed manifest: files and splits are mappings")
    inside = folder.resolve()
    for name, meta in files.items():
        # Every path a manifest names is a file of this folder: never `../x` or `/etc/shadow`.
        plain = name == Path(name).name and name not in (".", "..") and "\\" not in name
        if not plain or not (folder / name).resolve().is_relative_to(inside):
            raise DatasetError(
                f"{path}: files: {name!r} is not a file of the dataset folder; refused"
            )
        if not isinstance(meta, dict):
            raise DatasetError(f"{path}: files.{name}: expected {{sha256, rows}}")
    try:
        Recipe.model_validate(manifest["recipe"])
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise DatasetError(f"{path}: malformed manifest: recipe.{loc}: {first['msg']}") from exc
    train = folder / "train.jsonl"
    if not train.is_file() or train.stat().st_size == 0:
        state = "missing" if not train.is_file() else "empty"
        raise DatasetError(f"{train}: {state}; nothing to train on")
    return dict(manifest)


def manifest_root(manifest: Mapping[str, Any], root: str | os.PathLike[str] | None) -> str | None:
    """The contract root to read a dataset's contract from: `root` when given, else the root
    the manifest records (when it still exists), else None ($JARVIS_ROOT, the bundled root)."""
    if root is not None:
        return os.fspath(root)
    info = manifest.get("contract")
    recorded = info.get("root") if isinstance(info, Mapping) else None
    if isinstance(recorded, str) and (Path(recorded) / "contracts").is_dir():
        return recorded
    return None


def format_summary(manifest: Mapping[str, Any]) -> str:
    """Return the human summary table: rows per split and tag, shares, compliance, rejects."""
    splits: Mapping[str, Any] = manifest["splits"]
    names = [s for s in SPLITS if s in splits]
    tags = sorted({t for s in names for t in splits[s]["tags"]})
    header = ["tag", *names, "train share", "train compliant"]
    table = [header]
    train = splits.get("train", {})
    for tag in tags:
        cells = [tag]
        for s in names:
            cells.append(str(splits[s]["tags"].get(tag, {}).get("rows", 0)))
        info = train.get("tags", {}).get(tag, {})
        cells.append(f"{info.get('share', 0.0):.1%}")
        cells.append(f"{train.get('compliance', {}).get('per_tag', {}).get(tag, 0.0):.1%}")
        table.append(cells)
    total = ["total", *(str(splits[s]["rows"]) for s in names), "100.0%"]
    total.append(f"{train.get('compliance', {}).get('overall', 0.0):.1%}")
    table.append(total)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    c = manifest["contract"]
    out = [f"{c['ref']} ({c['fingerprint'][:12]})  format: {manifest['format']}", *lines]
    repeats = train.get("repeats") or {}
    if repeats:
        out.append("repeats in train: " + ", ".join(f"{t} x{n}" for t, n in repeats.items()))
    for name in names:
        stats = splits[name].get("tokens")
        if stats:
            out.append(
                f"tokens {name}: min {stats['min']}  mean {stats['mean']}  "
                f"p95 {stats['p95']}  max {stats['max']}"
            )
    retrieval = manifest.get("retrieval")
    if isinstance(retrieval, dict):
        shares = ", ".join(
            f"{name} {info['rows_with_exemplars']:.0%} (mean {info['mean_exemplars']:.1f})"
            for name in SPLITS
            if (info := retrieval["splits"].get(name))
        )
        out.append(
            f"exemplars: {retrieval['store']}, {retrieval['exemplars']} from the train split; "
            f"records with exemplars: {shares}"
        )
    out.append(
        f"duplicates dropped: {manifest['duplicates']}   rejects: {manifest['rejects']}"
        + (f" (see {REJECTS})" if manifest["rejects"] else "")
    )
    out += composition_warnings(manifest)
    return "\n".join(out)


# Below this share of training targets passing every output check, the adapter mostly
# learns other formats: the post-mortem trained on 0.05% and learned none.
LOW_COMPLIANCE = 0.5


def composition_warnings(manifest: Mapping[str, Any]) -> list[str]:
    """Return `warning: ...` lines about the train split that passed every threshold given.

    A tag with no training rows, and training targets that mostly fail the contract's own
    output checks (with the `--repeat` that would lift them past 50%, when a tag's targets
    do pass).
    """
    train = manifest["splits"].get("train") or {}
    tags: Mapping[str, Any] = train.get("tags") or {}
    out = []
    # A tag can lose every row to --on-overlength drop or rejects; say so, not just "0".
    for tag in sorted(tags):
        if not tags[tag].get("rows", 0):
            out.append(f"warning: tag {tag!r} has no training rows")
    compliance = train.get("compliance") or {}
    overall = float(compliance.get("overall", 1.0))
    rows = int(train.get("rows", 0))
    if not compliance.get("per_check") or not rows or overall >= LOW_COMPLIANCE:
        return out
    ref = manifest["contract"]["ref"]
    line = (
        f"warning: only {overall:.1%} of training targets pass every output check of {ref} "
        f"({round(overall * rows)} of {rows} rows): the adapter will mostly learn other formats"
    )
    per_tag = compliance.get("per_tag") or {}
    good = [t for t in sorted(tags) if per_tag.get(t, 0.0) >= 0.9 and tags[t].get("rows")]
    if good:
        tag = max(good, key=lambda t: (tags[t]["rows"], t))
        already = max((train.get("repeats") or {}).get(tag, 1), 1)
        n, share = tags[tag]["rows"] // already, per_tag[tag]
        # The smallest number k of extra copies (n rows each, `share` of them passing) with
        # (passed + k*n*share) / (rows + k*n) >= LOW_COMPLIANCE; share >= 0.9 > 0.5.
        need = LOW_COMPLIANCE * rows - overall * rows
        extra = max(math.ceil(round(need / (n * (share - LOW_COMPLIANCE)), 9)), 0)
        line += (
            f"; try --repeat {tag}={(1 + extra) * already} "
            f"and gate the run with --min-compliant {LOW_COMPLIANCE:g}"
        )
    else:
        line += (
            "; add records whose targets pass the checks, tagged (--input perfect=FILE), and "
            f"gate the run with --min-compliant {LOW_COMPLIANCE:g}"
        )
    out.append(line)
    return out
