"""A compact set of 64-bit hashes: 8 bytes a member instead of a Python set's ~78.

Members live in a sorted numpy array, checked a task at a time with one vectorized search;
members added since the last `settle` wait in a small Python set and are merged in when it
grows past an eighth of the array, so a run merges O(log n) times.
"""

from __future__ import annotations

from array import array
from collections.abc import Sized
from typing import Any

_MIN_PENDING = 1 << 16


class SeenSet:
    """64-bit hashes seen so far."""

    def __init__(self) -> None:
        # Imported here: `jarvis.dataset` is also imported by verify, diff and eval.
        import numpy as np

        self.np = np
        self.sorted: Any = np.empty(0, dtype=np.uint64)
        self.pending: set[int] = set()

    def __len__(self) -> int:
        return len(self.sorted) + len(self.pending)

    def __contains__(self, value: int) -> bool:
        """Whether `value` was added; exact for any value, cheap for those not pending."""
        return value in self.pending or bool(self.contains_many(array("Q", [value]))[0])

    def pending_has(self, value: int) -> bool:
        """Whether `value` was added since the last `settle` (pair with `contains_many`)."""
        return value in self.pending

    def add(self, value: int) -> None:
        """Add a value that is not a member yet."""
        self.pending.add(value)

    def contains_many(self, values: array[int]) -> Any:
        """For each value, whether it is among the members settled so far (a bool array)."""
        return _search(self.sorted, self.np.frombuffer(values, dtype=self.np.uint64))[1]

    def settle(self) -> None:
        """Merge the pending members into the array once they are many.

        Pending members are never in the array (`add` takes new values only), so one
        insert at their sorted places does: a single new array, no unique pass.
        """
        if not _merge_due(self.pending, self.sorted):
            return
        np = self.np
        fresh = np.sort(np.fromiter(self.pending, dtype=np.uint64, count=len(self.pending)))
        self.pending = set()
        self.sorted = np.insert(self.sorted, np.searchsorted(self.sorted, fresh), fresh)


class GroupIds:
    """Group ids, numbered as groups are first met, by each group's 16-byte identity, whose
    first 8 bytes are its split ranking key (`Scanner`): 28 bytes a group (identity, id,
    key), where a dict of names beside a list of keys took about 180 (a million groups
    peaked 149 MB higher, measured).

    Settled identities live in a sorted numpy array with their ids beside, looked up a task
    at a time; new ones wait in a small dict and are merged in as `SeenSet` merges.
    """

    def __init__(self) -> None:
        import numpy as np

        self.np = np
        self.sorted: Any = np.empty(0, dtype="S16")
        self.sorted_ids: Any = np.empty(0, dtype=np.int32)
        # numpy gives an S16 value as bytes without its trailing NULs: the same for every
        # use here (equal values, equal bytes), padded back when merged.
        self.pending: dict[bytes, int] = {}
        self.keys: array[int] = array("Q")  # by id

    def __len__(self) -> int:
        return len(self.keys)

    def ids_for(self, idents: Any) -> Any:
        """Each identity's group id (`idents`: an S16 array in record order), numbering the
        groups not met before in that order and keeping their keys.

        Returns:
            The ids (int32).
        """
        np = self.np
        at, found = _search(self.sorted, idents)
        ids = np.full(len(idents), -1, dtype=np.int32)
        ids[found] = self.sorted_ids[at[found]]
        pending, new = self.pending, list[bytes]()
        miss = np.flatnonzero(~found)
        got = []
        for ident in idents[miss].tolist():
            gid = pending.get(ident)
            if gid is None:
                gid = pending[ident] = len(self.keys) + len(new)
                new.append(ident)
            got.append(gid)
        ids[miss] = got
        # A new group's key: the first 8 bytes of its identity, big-endian.
        heads = np.array(new, dtype="S16").view(">u8")[::2]
        self.keys.frombytes(heads.astype(np.uint64).tobytes())
        return ids

    def settle(self) -> None:
        """Merge the pending groups into the arrays once they are many."""
        if not _merge_due(self.pending, self.sorted):
            return
        np = self.np
        fresh = np.array(list(self.pending), dtype="S16")
        fresh_ids = np.fromiter(self.pending.values(), dtype=np.int32, count=len(self.pending))
        order = np.argsort(fresh, kind="stable")
        fresh, fresh_ids = fresh[order], fresh_ids[order]
        self.pending = {}
        at = np.searchsorted(self.sorted, fresh)
        self.sorted = np.insert(self.sorted, at, fresh)
        self.sorted_ids = np.insert(self.sorted_ids, at, fresh_ids)


def _search(settled: Any, query: Any) -> tuple[Any, Any]:
    """Where each of `query` would stand in the sorted `settled` (0 past its end), and
    whether it is there."""
    import numpy as np

    if not len(settled) or not len(query):
        return np.zeros(len(query), dtype=np.intp), np.zeros(len(query), dtype=bool)
    at = np.searchsorted(settled, query)
    at[at == len(settled)] = 0
    return at, settled[at] == query


def _merge_due(pending: Sized, settled: Any) -> bool:
    """Whether the members waiting outside the sorted array are many enough to merge in: an
    eighth of it, so a run merges O(log n) times."""
    return len(pending) >= max(_MIN_PENDING, len(settled) >> 3)
