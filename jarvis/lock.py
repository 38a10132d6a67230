"""`contracts.lock`: a locked contract version can never change silently.

`lock` records the fingerprint (and a hash per part) of every new version and refuses to
rewrite a locked one; `check` names each changed file, unlocked version or vanished version;
`bump` starts the next version as a copy of the latest, which is how a prompt changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import yaml

from jarvis.contract import (
    LOCK_FILE,
    ContractSpec,
    bundled_root,
    load_all,
    lock_mismatch_message,
    read_lock,
    read_spec,
    resolve_root,
)
from jarvis.errors import ContractError, LockError
from jarvis.files import atomic_write_text, compose_yaml, load_yaml, read_text


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


def writable_root(path: Path) -> Path:
    """Refuse to write into the contract root shipped inside the installed package.

    Changing it would change `reply` for every app in the environment, and the next
    `pip install` would silently undo it.

    Raises:
        ContractError: `path` is the installed bundled root (names the ways out).
    """
    bundled = bundled_root()
    if bundled.name == "_bundled" and path.resolve() == bundled.resolve():
        raise ContractError(
            f"{path} is the contract root bundled inside the installed jarvis package, which "
            "is read-only: start your own with `jarvis contract new NAME --root DIR`, or copy "
            f"this one (`cp -r {path} DIR`) and pass `--root DIR` (or set JARVIS_ROOT)"
        )
    return path


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
    pending = [c.ref for c in load_all(path, enforce_lock=False) if c.ref not in lock]
    if pending or not (path / LOCK_FILE).exists():
        writable_root(path)
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


def bump_version(name: str, root: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """Start a new version of a contract as a copy of its latest one, ready to edit and lock.

    Copies `prompts/<name>/v<N>/` to `v<N+1>/` (includes re-pointed to the new folder) and
    appends `N+1:` to `contracts/<name>.yaml` as a copy of version N's block, as text, so
    the file's comments and layout stay as they are.

    Args:
        name: the contract name.
        root: contract root (default `$JARVIS_ROOT`, else the bundled root).

    Returns:
        (the old ref, the new ref), e.g. ("reply@1", "reply@2").

    Raises:
        ContractError: the new version's folder exists, or the spec cannot be extended.
    """
    path = writable_root(resolve_root(root))
    spec = read_spec(path, name)
    old = max(spec.versions)
    new = old + 1
    src, dst = path / "prompts" / name / f"v{old}", path / "prompts" / name / f"v{new}"
    if dst.exists():
        raise ContractError(f"{dst} exists; remove it or edit it and add version {new} by hand")
    spec_path = path / "contracts" / f"{name}.yaml"
    text = read_text(spec_path, ContractError)
    updated = _append_version_block(text, old, new, where=spec_path)
    shutil.copytree(src, dst)
    for template in sorted(p for p in dst.rglob("*") if p.is_file()):
        source = read_text(template, ContractError)
        for quote in ('"', "'"):
            source = source.replace(f"{quote}v{old}/", f"{quote}v{new}/")
        template.write_text(source, encoding="utf-8")
    atomic_write_text(spec_path, updated)
    return f"{name}@{old}", f"{name}@{new}"


def _append_version_block(text: str, old: int, new: int, *, where: Path) -> str:
    """Return the spec text with version `old`'s block copied as version `new` after it."""
    root_node = compose_yaml(text)
    versions = next(
        (v for k, v in getattr(root_node, "value", []) if getattr(k, "value", None) == "versions"),
        None,
    )
    block = next(
        ((k, v) for k, v in getattr(versions, "value", []) if str(k.value) == str(old)), None
    )
    if block is None:
        raise ContractError(f"{where}: cannot find `versions: {old}:` to copy")
    key, value = block
    lines = text.splitlines(keepends=True)
    end = value.end_mark.line + (1 if value.end_mark.column else 0)
    chunk = lines[key.start_mark.line : end]
    if chunk and not chunk[-1].endswith("\n"):
        chunk[-1] += "\n"
        lines[end - 1] = chunk[-1]
    chunk[0] = re.sub(rf"^(\s*){old}(\s*:)", rf"\g<1>{new}\g<2>", chunk[0], count=1)
    updated = "".join(lines[:end] + chunk + lines[end:])
    try:
        ContractSpec.model_validate(load_yaml(updated))
    except (yaml.YAMLError, ValueError) as exc:
        raise ContractError(f"{where}: cannot add version {new} automatically: {exc}") from exc
    return updated
