"""`contracts.lock`: a locked contract version can never change silently.

`lock` records the fingerprint (and a hash per part) of every new version and refuses to
rewrite a locked one; `check` names each changed file, unlocked version or vanished version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jarvis.contract import LOCK_FILE, load_all, lock_mismatch_message, read_lock, resolve_root
from jarvis.errors import LockError
from jarvis.files import atomic_write_text


def check_lock(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Compare every contract version in a root with `contracts.lock`.

    Returns:
        One line per problem (empty when everything is locked and unchanged).
    """
    path = resolve_root(root)
    lock = read_lock(path)
    problems: list[str] = []
    current = {c.ref: c for c in load_all(path, enforce_lock=False)}
    for ref, contract in current.items():
        entry = lock.get(ref)
        if entry is None:
            problems.append(f"{ref} is not locked; run `jarvis contract lock`")
        elif entry["fingerprint"] != contract.fingerprint:
            problems.append(lock_mismatch_message(ref, entry, contract.parts))
    for ref in sorted(lock.keys() - current.keys()):
        problems.append(f"{ref} is locked but no longer exists in {path / 'contracts'}")
    return problems


def write_lock(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Add every unlocked contract version to `contracts.lock` (written atomically).

    Returns:
        The refs that were added.

    Raises:
        LockError: a locked version's content changed (a lock is never rewritten).
    """
    path = resolve_root(root)
    lock = read_lock(path)
    added: list[str] = []
    for contract in load_all(path, enforce_lock=False):
        entry = lock.get(contract.ref)
        if entry is None:
            lock[contract.ref] = {"fingerprint": contract.fingerprint, "parts": contract.parts}
            added.append(contract.ref)
        elif entry["fingerprint"] != contract.fingerprint:
            raise LockError(lock_mismatch_message(contract.ref, entry, contract.parts))
    if added or not (path / LOCK_FILE).exists():
        text = json.dumps(lock, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        atomic_write_text(Path(path) / LOCK_FILE, text)
    return added
