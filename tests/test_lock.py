"""contracts.lock: lock adds new versions, refuses rewrites; check names changed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract_root import add_version, copy_root
from jarvis.errors import LockError
from jarvis.lock import check_lock, write_lock


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_root(tmp_path / "root")


def test_bundled_lock_is_current() -> None:
    assert check_lock() == []


def test_check_names_the_changed_template(root: Path) -> None:
    system = root / "prompts/reply/v1/system.j2"
    system.write_bytes(
        system.read_bytes().replace(b"Jwalin", b"Jwalin", 1).replace(b"casual", b"Casual")
    )
    problems = check_lock(root)
    assert len(problems) == 1
    assert problems[0].startswith(
        "reply@1 changed since it was locked: prompts/reply/v1/system.j2 (locked "
    )


def test_new_version_is_unlocked_until_lock(root: Path) -> None:
    add_version(root, "reply", 1, 2)
    assert check_lock(root) == ["reply@2 is not locked; run `jarvis contract lock`"]
    assert write_lock(root) == ["reply@2"]
    assert check_lock(root) == []
    lock = json.loads((root / "contracts.lock").read_text())
    assert sorted(lock) == ["codegen@1", "reply@1", "reply@2"]
    assert write_lock(root) == []


def test_lock_refuses_to_rewrite_a_locked_version(root: Path) -> None:
    user = root / "prompts/codegen/v1/user.j2"
    user.write_text(user.read_text().replace("Input:", "Given:"))
    before = (root / "contracts.lock").read_bytes()
    with pytest.raises(
        LockError, match="codegen@1 changed since it was locked: prompts/codegen/v1/user.j2"
    ):
        write_lock(root)
    assert (root / "contracts.lock").read_bytes() == before


def test_vanished_version_is_reported(root: Path) -> None:
    lock = json.loads((root / "contracts.lock").read_text())
    lock["reply@7"] = lock["reply@1"]
    (root / "contracts.lock").write_text(json.dumps(lock))
    assert check_lock(root)[-1].startswith("reply@7 is locked but no longer exists")
