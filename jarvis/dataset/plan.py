"""Between the passes: assign splits (groups together, stratified per tag), count what each
split holds, and enforce the composition thresholds.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jarvis.contract import Contract
from jarvis.dataset.recipe import Recipe
from jarvis.dataset.records import PassOneState, as_numpy
from jarvis.errors import (
    DatasetError,
)
from jarvis.splits import SPLITS, TRAIN, assign

# --- between the passes: splits and composition ---------------------------------------------


@dataclass
class SplitPlan:
    """Each unit's split, and what every split holds per tag and per check."""

    split_of: bytearray
    rows: list[list[int]]  # [split][tag] -> rows (train counts repeats)
    records: list[list[int]]  # [split][tag] -> unique records
    passed: list[list[int]]  # [split][tag] -> rows passing every check
    per_check: list[list[int]]  # [split][check] -> rows passing that check
    tokens: list[array[int]]  # [split] -> token count per record (repeats not counted)
    blocks: list[int]  # [split] -> records whose RAG block is not empty (found in pass 1)


def plan_splits(recipe: Recipe, contract: Contract, state: PassOneState) -> SplitPlan:
    """Assign every unit (a group, or a record of no group) its split, stratified per tag,
    `--train-only` tags to train, and count what each split holds.

    Returns:
        The plan pass 2 writes by and the manifest counts from.
    """
    # Whole-array numpy steps (a Python loop here cost about 2 us a record), in the narrowest
    # types: at a million records every int64 temporary is 8 MB of peak memory.
    import numpy as np

    n = len(state.tag_of)
    ntags = len(state.tags)
    tag_of = as_numpy(state.tag_of)  # uint16
    group_of = as_numpy(state.group_of)  # int32
    forced_tags = sorted({state.tags.index(t) for t in recipe.train_only})
    is_forced = np.isin(tag_of, forced_tags).astype(np.uint8)
    # Units: groups first (index = group id), then ungrouped records in input order.
    ngroups = len(state.groups)
    if ngroups:
        grouped = group_of >= 0
        loose = np.flatnonzero(~grouped)
        unit_of = group_of.copy()
        unit_of[loose] = ngroups + np.arange(len(loose), dtype=np.int32)
        members = group_of[grouped]
        strata = np.full(ngroups, 65535, dtype=np.uint16)
        # A group spanning tags is stratified under its first tag name; forced if any is.
        np.minimum.at(strata, members, tag_of[grouped])
        forced = np.zeros(ngroups, dtype=np.uint8)
        np.maximum.at(forced, members, is_forced[grouped])
        sizes = np.bincount(members, minlength=ngroups).astype(np.uint32)
        del grouped, members
        unit_split = assign(
            np.concatenate([as_numpy(state.groups.keys), as_numpy(state.key_of)[loose]]),
            np.concatenate([strata, tag_of[loose]]),
            np.concatenate([sizes, np.ones(len(loose), dtype=np.uint32)]),
            np.concatenate([forced, is_forced[loose]]),
            recipe.split,
        )
        del loose
        split = np.frombuffer(unit_split, dtype=np.uint8)[unit_of]
        del unit_of
    else:  # every record a unit of its own, in input order: no gathers (8 MB each at 1M)
        unit_split = assign(
            as_numpy(state.key_of), tag_of, np.ones(n, dtype=np.uint8), is_forced, recipe.split
        )
        split = np.frombuffer(unit_split, dtype=np.uint8)
    del is_forced
    nchecks = len(contract.spec.checks)
    repeat = np.array([recipe.repeat.get(t, 1) for t in state.tags] or [1], dtype=np.int32)
    weight = np.where(split == TRAIN, repeat[tag_of], np.int32(1))
    cell = split.astype(np.int32) * ntags + tag_of  # [split][tag], flattened
    masks = as_numpy(state.checks_of)

    def per_cell(values: Any) -> list[list[int]]:
        # bincount's float sums are exact far past any count here (2**53).
        weights = None if isinstance(values, int) else values
        counts = np.bincount(cell, weights, minlength=len(SPLITS) * ntags).astype(np.int64)
        return [counts[s * ntags : (s + 1) * ntags].tolist() for s in range(len(SPLITS))]

    per_check = [[0] * nchecks for _ in SPLITS]
    for bit in range(nchecks):
        hit = (masks >> np.uint64(bit)) & np.uint64(1) == 1
        for s in range(len(SPLITS)):
            per_check[s][bit] = int(weight[hit & (split == s)].sum(dtype=np.int64))
    passed = masks == np.uint64((1 << nchecks) - 1)
    tokens = as_numpy(state.tokens_of)
    return SplitPlan(
        split_of=bytearray(split.tobytes()),
        rows=per_cell(weight),
        records=per_cell(1),
        passed=per_cell(np.where(passed, weight, np.int32(0))),
        per_check=per_check,
        tokens=[array("I", tokens[split == s].tobytes()) for s in range(len(SPLITS))],
        blocks=np.bincount(split[as_numpy(state.blocked)], minlength=len(SPLITS)).tolist(),
    )


def share_of(part: int, whole: int) -> float:
    """`part / whole` to six places, 0.0 for an empty whole (the manifest's shares)."""
    return round(part / whole, 6) if whole else 0.0


def _token_stats(lengths: Sequence[int]) -> dict[str, float | int]:
    ordered = sorted(lengths)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
        "p95": p95,
    }


def split_summary(
    recipe: Recipe, contract: Contract, state: PassOneState, plan: SplitPlan, s: int, tokens: bool
) -> dict[str, Any]:
    """The manifest's summary of split `s`: rows, records, tags, repeats, compliance, and
    token statistics where `tokens` were counted."""
    rows = sum(plan.rows[s])
    names = [_check_name(c) for c in contract.spec.checks]
    out: dict[str, Any] = {
        "rows": rows,
        "records": sum(plan.records[s]),
        "tags": {
            t: {
                "rows": plan.rows[s][i],
                "records": plan.records[s][i],
                "share": share_of(plan.rows[s][i], rows),
            }
            for i, t in enumerate(state.tags)
        },
        "repeats": {t: n for t, n in sorted(recipe.repeat.items())} if s == TRAIN else {},
        "compliance": {
            "overall": share_of(sum(plan.passed[s]), rows),
            "per_tag": {
                t: share_of(plan.passed[s][i], plan.rows[s][i]) for i, t in enumerate(state.tags)
            },
            "per_check": {
                name: share_of(plan.per_check[s][b], rows) for b, name in enumerate(names)
            },
        },
    }
    if tokens and plan.tokens[s]:
        out["tokens"] = _token_stats(plan.tokens[s])
    return out


def _check_name(spec: Mapping[str, Any]) -> str:
    return next(iter(spec))


def enforce_composition(
    recipe: Recipe, contract: Contract, state: PassOneState, plan: SplitPlan
) -> None:
    """Refuse a plan that would not train: no valid record, a split under
    `--min-split-rows`, a tag under its `--min-ratio`, or train under `--min-compliant`.

    Raises:
        DatasetError: naming the threshold, what the plan has, and what would meet it.
    """
    if not state.tag_of:
        raise DatasetError(
            f"no valid records: all {state.total} records were rejected; nothing to train on"
        )
    bs = recipe.min_split_rows
    for s, name in enumerate(SPLITS):
        rows = sum(plan.rows[s])
        if s != TRAIN and recipe.split[s] == 0:
            continue
        if rows < bs:
            hint = (
                "add records"
                if s == TRAIN
                else f"add records, or raise its --split share (0 leaves {name}.jsonl out)"
            )
            raise DatasetError(
                f"{name} split has {rows} rows, fewer than --min-split-rows {bs}: mlx-lm "
                f"cannot form one batch from it; {hint}"
            )
    train_rows = sum(plan.rows[TRAIN])
    for tag, ratio in sorted(recipe.min_ratio.items()):
        i = state.tags.index(tag)
        have = plan.rows[TRAIN][i]
        share = have / train_rows
        if share < ratio:
            others = train_rows - have
            records = plan.records[TRAIN][i]
            if ratio >= 1 or not records:
                # No --repeat can help: other tags keep rows, or the tag has none to repeat.
                hint = (
                    f"add {tag} records"
                    if not records
                    else f"no --repeat reaches a share of {ratio:g} while other tags have "
                    f"{others} train rows"
                )
            else:
                need = math.ceil(ratio * others / ((1 - ratio) * records))
                hint = f"add {tag} records, or try --repeat {tag}={need}"
            raise DatasetError(
                f"tag {tag!r} is {share:.2%} of train ({have} of {train_rows} rows), below "
                f"--min-ratio {tag}={ratio:g}; {hint}"
            )
    if recipe.min_compliant is not None:
        passed = sum(plan.passed[TRAIN])
        share = passed / train_rows
        if share < recipe.min_compliant:
            per_check = ", ".join(
                f"{_check_name(c)} {plan.per_check[TRAIN][b] / train_rows:.1%}"
                for b, c in enumerate(contract.spec.checks)
            )
            raise DatasetError(
                f"{share:.2%} of training targets pass every output check of {contract.ref} "
                f"({passed} of {train_rows} rows), below --min-compliant "
                f"{recipe.min_compliant:g}; per check: {per_check or 'no checks'}"
            )
