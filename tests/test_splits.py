"""Split assignment: exact stratified counts, groups kept together, forced train."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jarvis.errors import InputError
from jarvis.splits import TEST, TRAIN, VALID, assign, parse_split, targets, unit_key


def test_parse_split_accepts_text_and_rejects_bad_sums() -> None:
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    with pytest.raises(InputError, match="must sum to 1"):
        parse_split("0.8,0.1,0.2")
    with pytest.raises(InputError, match="three"):
        parse_split("0.9,0.1")
    with pytest.raises(InputError, match="train fraction"):
        parse_split("0,0.5,0.5")


def test_targets_round_half_up() -> None:
    assert targets(20, (0.9, 0.05, 0.05)) == (18, 1, 1)
    assert targets(2000, (0.9, 0.05, 0.05)) == (1800, 100, 100)
    assert targets(3, (0.9, 0.05, 0.05)) == (3, 0, 0)


def test_assign_is_exact_per_stratum_and_independent_of_unit_order() -> None:
    keys = [unit_key(0, b"record", b"%d" % i) for i in range(120)]
    strata = [0] * 100 + [1] * 20
    split = assign(keys, strata, [1] * 120, [0] * 120, (0.9, 0.05, 0.05))
    assert [split[:100].count(s) for s in (TRAIN, VALID, TEST)] == [90, 5, 5]
    assert [split[100:].count(s) for s in (TRAIN, VALID, TEST)] == [18, 1, 1]
    order = list(reversed(range(120)))
    again = assign(
        [keys[i] for i in order],
        [strata[i] for i in order],
        [1] * 120,
        [0] * 120,
        (0.9, 0.05, 0.05),
    )
    assert [again[order.index(u)] for u in range(120)] == list(split)


def test_forced_units_always_train() -> None:
    keys = [unit_key(1, b"record", b"%d" % i) for i in range(40)]
    split = assign(keys, [0] * 40, [1] * 40, [1] * 40, (0.5, 0.25, 0.25))
    assert set(split) == {TRAIN}


def test_seed_changes_the_keys() -> None:
    assert unit_key(0, b"record", b"x") != unit_key(1, b"record", b"x")


def _assign_by_loop(
    keys: list[int],
    strata: list[int],
    sizes: list[int],
    forced: list[int],
    ratios: tuple[float, float, float],
) -> bytearray:
    """The plain reading of `assign`'s rule, one ranked unit at a time (its reference)."""
    out = bytearray(len(keys))
    by_stratum: dict[int, list[int]] = {}
    for unit, stratum in enumerate(strata):
        if not forced[unit]:
            by_stratum.setdefault(stratum, []).append(unit)
    for units in by_stratum.values():
        units.sort(key=lambda u: (keys[u], u))
        _, want_valid, want_test = targets(sum(sizes[u] for u in units), ratios)
        got_valid = got_test = 0
        for unit in units:
            if got_valid < want_valid:
                out[unit] = VALID
                got_valid += sizes[unit]
            elif got_test < want_test:
                out[unit] = TEST
                got_test += sizes[unit]
    return out


_UNITS = st.lists(
    st.tuples(
        # Few distinct keys, so that ties (ranked by unit index) happen.
        st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)),
        st.integers(0, 3),  # stratum
        st.integers(1, 9),  # size (a group's records)
        st.integers(0, 1) | st.just(0),  # forced train, less often
    ),
    max_size=60,
)
_RATIOS = st.sampled_from(
    [(0.9, 0.05, 0.05), (0.5, 0.25, 0.25), (0.8, 0.2, 0.0), (0.34, 0.33, 0.33)]
)


@settings(max_examples=300, deadline=None)
@given(units=_UNITS, ratios=_RATIOS)
def test_assign_matches_the_unit_by_unit_walk(
    units: list[tuple[int, int, int, int]], ratios: tuple[float, float, float]
) -> None:
    keys = [u[0] for u in units]
    strata = [u[1] for u in units]
    sizes = [u[2] for u in units]
    forced = [u[3] for u in units]
    want = _assign_by_loop(keys, strata, sizes, forced, ratios)
    assert assign(keys, strata, sizes, forced, ratios) == want
