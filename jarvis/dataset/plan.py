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
from jarvis.dataset.records import _State
from jarvis.errors import (
    DatasetError,
)
from jarvis.splits import SPLITS, TRAIN, assign

# --- between the passes: splits and composition ---------------------------------------------


@dataclass
class _Plan:
    split_of: bytearray
    rows: list[list[int]]  # [split][tag] -> rows (train counts repeats)
    records: list[list[int]]  # [split][tag] -> unique records
    passed: list[list[int]]  # [split][tag] -> rows passing every check
    per_check: list[list[int]]  # [split][check] -> rows passing that check
    tokens: list[array[int]]  # [split] -> token count per record (repeats not counted)


def _plan(recipe: Recipe, contract: Contract, state: _State) -> _Plan:
    n = len(state.tag_of)
    ntags = len(state.tags)
    forced_tags = {state.tags.index(t) for t in recipe.train_only}
    # Units: groups first (index = group id), then ungrouped records.
    ngroups = len(state.group_keys)
    unit_of = array("i", [0]) * n
    keys = array("Q", state.group_keys)
    strata = array("H", [65535]) * ngroups
    sizes = array("I", [0]) * ngroups
    forced = bytearray(ngroups)
    for r in range(n):
        g = state.group_of[r]
        tag = state.tag_of[r]
        if g >= 0:
            unit_of[r] = g
            sizes[g] += 1
            # A group spanning tags is stratified under its first tag name; forced if any is.
            strata[g] = min(strata[g], tag)
            if tag in forced_tags:
                forced[g] = 1
        else:
            unit_of[r] = len(keys)
            keys.append(state.key_of[r])
            strata.append(tag)
            sizes.append(1)
            forced.append(1 if tag in forced_tags else 0)
    unit_split = assign(keys, strata, sizes, forced, recipe.split)
    split_of = bytearray(unit_split[unit_of[r]] for r in range(n))
    nchecks = len(contract.spec.checks)
    all_checks = (1 << nchecks) - 1
    repeat = [recipe.repeat.get(t, 1) for t in state.tags]
    plan = _Plan(
        split_of=split_of,
        rows=[[0] * ntags for _ in SPLITS],
        records=[[0] * ntags for _ in SPLITS],
        passed=[[0] * ntags for _ in SPLITS],
        per_check=[[0] * nchecks for _ in SPLITS],
        tokens=[array("I") for _ in SPLITS],
    )
    for r in range(n):
        s = split_of[r]
        tag = state.tag_of[r]
        weight = repeat[tag] if s == TRAIN else 1
        plan.rows[s][tag] += weight
        plan.records[s][tag] += 1
        mask = state.checks_of[r]
        if mask == all_checks:
            plan.passed[s][tag] += weight
        for bit in range(nchecks):
            if mask >> bit & 1:
                plan.per_check[s][bit] += weight
        plan.tokens[s].append(state.tokens_of[r])
    return plan


def _share(part: int, whole: int) -> float:
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


def _split_summary(
    recipe: Recipe, contract: Contract, state: _State, plan: _Plan, s: int, tokens: bool
) -> dict[str, Any]:
    rows = sum(plan.rows[s])
    names = [_check_name(c) for c in contract.spec.checks]
    out: dict[str, Any] = {
        "rows": rows,
        "records": sum(plan.records[s]),
        "tags": {
            t: {
                "rows": plan.rows[s][i],
                "records": plan.records[s][i],
                "share": _share(plan.rows[s][i], rows),
            }
            for i, t in enumerate(state.tags)
        },
        "repeats": {t: n for t, n in sorted(recipe.repeat.items())} if s == TRAIN else {},
        "compliance": {
            "overall": _share(sum(plan.passed[s]), rows),
            "per_tag": {
                t: _share(plan.passed[s][i], plan.rows[s][i]) for i, t in enumerate(state.tags)
            },
            "per_check": {name: _share(plan.per_check[s][b], rows) for b, name in enumerate(names)},
        },
    }
    if tokens and plan.tokens[s]:
        out["tokens"] = _token_stats(plan.tokens[s])
    return out


def _check_name(spec: Mapping[str, Any]) -> str:
    return next(iter(spec))


def _check_composition(recipe: Recipe, contract: Contract, state: _State, plan: _Plan) -> None:
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
