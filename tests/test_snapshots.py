"""Byte-exact snapshots of every rendered string of every bundled contract version.

`make snapshots` re-records them; a template edit shows up here as a diff, and a
snapshot left over from a removed case fails the run (syrupy's unused-snapshot check).
"""

from __future__ import annotations

from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension
from syrupy.extensions.single_file import SingleFileSnapshotExtension

from golden import GOLDEN
from jarvis import Prompt, build_prompt, render_example
from jarvis.contract import bundled_root, load_all, load_contract

EXAMPLES = bundled_root() / "examples" / "reply" / "threads.jsonl"


class TextSnapshot(SingleFileSnapshotExtension):
    """Raw bytes in a `.txt` file: no newline or whitespace normalisation at all."""

    file_extension = "txt"


VERSIONS = [c.ref for c in load_all(bundled_root())]
CASES = [(ref, case) for ref in VERSIONS for case in GOLDEN[ref.partition("@")[0]]]


@pytest.fixture
def text_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.with_defaults(extension_class=TextSnapshot)


def _record(ref: str, case: str) -> dict[str, Any]:
    return GOLDEN[ref.partition("@")[0]][case]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled history as an exemplar store, for the versions that retrieve."""
    from jarvis.rag.build import read_exemplars
    from jarvis.rag.store import build_store

    contract = load_contract("reply@2", root=bundled_root())
    path = tmp_path_factory.mktemp("store") / "history.sqlite"
    items = read_exemplars(contract, [str(EXAMPLES)]).exemplars
    build_store(path, items, contract="reply", key=str(contract.retrieval_key))
    return str(path)


def _prompt(ref: str, case: str, store: str) -> Prompt:
    """The runtime prompt; a version with retrieval fills its RAG block from `store`."""
    record = _record(ref, case)
    contract = load_contract(ref, root=bundled_root())
    if contract.retrieval is None:
        return build_prompt(record, contract=contract)
    runtime = {k: v for k, v in record.items() if k != contract.retrieval.field}
    return build_prompt(runtime, contract=contract, exemplars=store)


@pytest.mark.parametrize("ref", VERSIONS)
def test_system_prompt(ref: str, text_snapshot: SnapshotAssertion, store: str) -> None:
    assert _prompt(ref, "short", store).system.encode("utf-8") == text_snapshot


@pytest.mark.parametrize(("ref", "case"), CASES)
def test_user_content(ref: str, case: str, text_snapshot: SnapshotAssertion, store: str) -> None:
    assert _prompt(ref, case, store).user.encode("utf-8") == text_snapshot


@pytest.mark.parametrize(("ref", "case"), CASES)
def test_chatml_prompt(ref: str, case: str, text_snapshot: SnapshotAssertion, store: str) -> None:
    assert _prompt(ref, case, store).chatml().encode("utf-8") == text_snapshot


@pytest.mark.parametrize(("ref", "case"), CASES)
def test_training_row(ref: str, case: str, snapshot: SnapshotAssertion) -> None:
    row = render_example(_record(ref, case), contract=ref, root=bundled_root())
    assert row == snapshot.with_defaults(extension_class=JSONSnapshotExtension)
