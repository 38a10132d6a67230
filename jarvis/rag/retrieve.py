"""What a contract's `retrieval:` block means for one record: one function for every caller.

render-dataset, `build_prompt`/`build_simple_reply_prompt`, `ReplyEngine` and `jarvis reply`
all call `retrieve`, so a record's runtime prompt equals its training row's prompt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from jarvis.contract import Contract, RetrievalSpec
from jarvis.errors import ContractMismatchError, RecordError
from jarvis.rag.store import ExemplarStore, StoredExemplar


def _spec(contract: Contract) -> RetrievalSpec:
    spec = contract.retrieval
    if spec is None:
        raise RecordError(f"{contract.ref} declares no retrieval: it has no exemplar store")
    return spec


def query_text(contract: Contract, record: Mapping[str, Any]) -> str:
    """The text a record retrieves with (and is stored under as an exemplar).

    `last_incoming`: the last message whose sender is not the persona (case-insensitive);
    `last_message`: the last message; `field:NAME`: that field. "" when there is none.
    """
    spec = _spec(contract)
    if spec.query.startswith("field:"):
        value = record.get(spec.query.split(":", 1)[1])
        return value if isinstance(value, str) else ""
    messages = record.get("messages") or []
    if spec.query == "last_incoming":
        persona = str(contract.parameters.get(spec.persona, "")).casefold()
        messages = [m for m in messages if str(m.get("sender", "")).casefold() != persona]
    return str(messages[-1].get("text", "")) if messages else ""


def exemplar_of(contract: Contract, rid: str, record: Mapping[str, Any]) -> StoredExemplar | None:
    """A record as an exemplar (its query text and target); None without either."""
    target = record.get(contract.target_field)
    message = query_text(contract, record)
    if not isinstance(target, str) or not target.strip() or not message.strip():
        return None
    group = contract.group_key
    thread = record.get(group) if group else None
    return StoredExemplar(rid, None if thread is None else str(thread), message, target)


def retrieve(
    contract: Contract,
    store: ExemplarStore,
    record: Mapping[str, Any],
    *,
    leave_out: str | None = None,
) -> list[dict[str, str]]:
    """The exemplars of a record's RAG block, as `{"message", "reply"}` dicts.

    Args:
        contract: a contract with a `retrieval:` block.
        store: the exemplar store.
        record: the record (its target is used only with `leave_out`).
        leave_out: for a training row whose record is in the store: its id; the record
            itself and any exemplar whose reply equals its target are left out too.

    Returns:
        At most `k` exemplars, best first; [] when nothing matches.
    """
    spec = _spec(contract)
    thread = None
    if spec.exclude_thread and contract.group_key:
        value = record.get(contract.group_key)
        thread = None if value is None else str(value)
    target = record.get(contract.target_field) if leave_out is not None else None
    hits = store.search(
        query_text(contract, record),
        spec.k,
        exclude_thread=thread,
        exclude_id=leave_out,
        exclude_reply=target if isinstance(target, str) else None,
        min_score=spec.min_score,
    )
    return [{"message": h.exemplar.message, "reply": h.exemplar.reply} for h in hits]


def open_store(contract: Contract, store: str | os.PathLike[str] | ExemplarStore) -> ExemplarStore:
    """Open `store` (or take an open one) and check it was built for `contract`'s retrieval.

    Raises:
        StoreError: not a store.
        ContractMismatchError: the contract has no retrieval, or the store was built for
            another contract or retrieval key.
    """
    opened = store if isinstance(store, ExemplarStore) else ExemplarStore(store)
    try:
        _check_store(contract, opened)
    except ContractMismatchError:
        if opened is not store:
            opened.close()
        raise
    return opened


def _check_store(contract: Contract, opened: ExemplarStore) -> None:
    if contract.retrieval is None:
        raise ContractMismatchError(
            f"{contract.ref} declares no retrieval, so it cannot use the exemplar store "
            f"{opened.path} (a contract version with a `retrieval:` block can, e.g. reply@2)"
        )
    if opened.contract != contract.name or opened.key != contract.retrieval_key:
        raise ContractMismatchError(
            f"{opened.path} was built for {opened.contract} with retrieval key "
            f"{opened.key[:12]}, not {contract.ref} ({str(contract.retrieval_key)[:12]}); "
            "build it with `jarvis index build --contract " + contract.ref + "`"
        )


def fill_exemplars(
    contract: Contract,
    store: str | os.PathLike[str] | ExemplarStore | None,
    record: Mapping[str, Any],
) -> dict[str, Any]:
    """The runtime record with its RAG block filled by the contract's retrieval.

    Raises:
        RecordError: the record already carries the RAG field (a retrieval contract fills it).
        ContractMismatchError: see `open_store`.
    """
    if contract.retrieval is None and store is None:
        return dict(record)
    field = contract.retrieval.field if contract.retrieval is not None else ""
    if contract.retrieval is not None and record.get(field) is not None:
        raise RecordError(
            f"{field}: {contract.ref} retrieves its exemplars itself; a record must not "
            f"carry {field!r} (use a version without retrieval, e.g. reply@1, to pass your own)",
            field=field,
        )
    if store is None:
        return dict(record)
    opened = open_store(contract, store)
    try:
        found = retrieve(contract, opened, record)
    finally:
        if not isinstance(store, ExemplarStore):
            opened.close()
    return {**record, field: found} if found else dict(record)
