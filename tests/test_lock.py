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


def test_bump_copies_the_latest_version_keeping_the_spec_text(root: Path) -> None:
    from jarvis.contract import load_contract
    from jarvis.lock import bump_version

    spec = root / "contracts/reply.yaml"
    before = spec.read_text()
    assert bump_version("reply", root) == ("reply@1", "reply@2")
    after = spec.read_text()
    assert after.startswith(before)  # comments and layout kept; the new block is appended
    assert after[len(before) :].startswith("  2:\n    description:")
    v2 = root / "prompts/reply/v2"
    assert sorted(p.name for p in v2.iterdir()) == sorted(
        p.name for p in (root / "prompts/reply/v1").iterdir()
    )
    assert '"v2/exemplars.j2"' in (v2 / "user.j2").read_text()
    one, two = load_contract("reply@1", root=root), load_contract("reply@2", root=root)
    assert one.system_prompt == two.system_prompt and not two.locked
    assert "prompts/reply/v2/exemplars.j2" in two.parts
    assert check_lock(root) == ["reply@2 is not locked; run `jarvis contract lock`"]
    lock_before = (root / "contracts.lock").read_bytes()
    assert bump_version("reply", root) == ("reply@2", "reply@3")
    assert (root / "contracts.lock").read_bytes() == lock_before  # bumping never locks
    assert write_lock(root) == ["reply@2", "reply@3"]


def test_bump_refuses_an_existing_folder(root: Path) -> None:
    from jarvis.errors import ContractError
    from jarvis.lock import bump_version

    (root / "prompts/codegen/v2").mkdir()
    with pytest.raises(ContractError, match="v2 exists; remove it or edit it"):
        bump_version("codegen", root)
    assert "  2:" not in (root / "contracts/codegen.yaml").read_text()


def test_bump_inserts_after_the_last_version_when_more_keys_follow(root: Path) -> None:
    from jarvis.contract import load_contract
    from jarvis.lock import bump_version

    spec = root / "contracts/codegen.yaml"
    lines = spec.read_text().splitlines(keepends=True)
    description = next(line for line in lines if line.startswith("description:"))
    lines.remove(description)
    spec.write_text("".join(lines) + "# trailing comment\n" + description)
    (root / "contracts.lock").unlink()
    bump_version("codegen", root)
    text = spec.read_text()
    assert text.endswith("# trailing comment\n" + description)
    assert load_contract("codegen@2", root=root).spec == load_contract("codegen@1", root=root).spec
