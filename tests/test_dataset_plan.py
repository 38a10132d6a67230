"""The split plan between the passes: units (groups, or records of no group), their strata
and forced-train flags, as the plain reading of the rules would form them."""

from __future__ import annotations

from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from jarvis.contract import load_contract
from jarvis.dataset import Recipe
from jarvis.dataset.plan import plan_splits
from jarvis.dataset.records import PassOneState
from jarvis.splits import assign

TAGS = ["a", "b", "c"]

_RECORDS = st.lists(
    st.tuples(
        st.integers(0, 2),  # tag
        st.one_of(st.just(-1), st.integers(0, 4)),  # group (-1: none)
        st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)),  # key (ties too)
    ),
    max_size=50,
)


def _expected(
    records: list[tuple[int, int, int]], group_keys: list[int], forced: set[int], ratios: tuple
) -> list[int]:
    """Each record's split as the rules read: a group is one unit (its first tag by index
    its stratum, forced if any member is), every other record a unit of its own."""
    groups = sorted({g for _, g, _ in records if g >= 0})
    keys, strata, sizes, force = [], [], [], []
    for g in groups:
        members = [t for t, gg, _ in records if gg == g]
        keys.append(group_keys[g])
        strata.append(min(members))
        sizes.append(len(members))
        force.append(int(any(t in forced for t in members)))
    unit_of = {}
    for i, (tag, group, key) in enumerate(records):
        if group < 0:
            unit_of[i] = len(keys)
            keys.append(key)
            strata.append(tag)
            sizes.append(1)
            force.append(int(tag in forced))
        else:
            unit_of[i] = groups.index(group)
    split = assign(keys, strata, sizes, force, ratios)
    return [split[unit_of[i]] for i in range(len(records))]


@settings(max_examples=150, deadline=None)
@given(
    records=_RECORDS,
    forced=st.sets(st.integers(0, 2), max_size=2),
    ratios=st.sampled_from([(0.9, 0.05, 0.05), (0.5, 0.25, 0.25), (0.6, 0.4, 0.0)]),
    group_keys=st.lists(st.integers(0, 2**64 - 1), min_size=5, max_size=5),
)
def test_plan_splits_records_by_their_units(
    records: list[tuple[int, int, int]],
    forced: set[int],
    ratios: tuple[float, float, float],
    group_keys: list[int],
) -> None:
    # Group ids are numbered as first met (pass 1 does): renumber the drawn ones so.
    order: dict[int, int] = {}
    for _, g, _ in records:
        if g >= 0:
            order.setdefault(g, len(order))
    records = [(t, order.get(g, -1), k) for t, g, k in records]
    state = PassOneState(tags=list(TAGS))
    state.tag_of = array("H", [t for t, _, _ in records])
    state.group_of = array("i", [g for _, g, _ in records])
    state.key_of = array("Q", [k for _, _, k in records])
    state.checks_of = array("Q", [0] * len(records))
    state.tokens_of = array("I", [0] * len(records))
    state.groups.keys = array("Q", group_keys[: len(order)])
    recipe = Recipe.build(
        contract="reply@1", inputs=["x.jsonl"], train_only=[TAGS[t] for t in forced], split=ratios
    )
    plan = plan_splits(recipe, load_contract("reply@1"), state)
    want = _expected(records, group_keys, forced, ratios)
    assert list(plan.split_of) == want
    # Train counts each record once here (no --repeat); every record lands in one split.
    assert sum(sum(row) for row in plan.records) == len(records)
