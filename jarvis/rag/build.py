"""Exemplars from a user's records: what `jarvis index build|add` read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jarvis.contract import Contract
from jarvis.errors import InputError, RecordError
from jarvis.inputs import InputSpec, expand, iter_file
from jarvis.rag.retrieve import exemplar_of
from jarvis.rag.store import StoredExemplar
from jarvis.schemas import record_key


@dataclass
class Harvest:
    """The exemplars read from inputs and what was skipped."""

    exemplars: list[StoredExemplar]
    records: int = 0
    skipped: int = 0  # records without a target or a query text


def read_exemplars(contract: Contract, inputs: Sequence[str]) -> Harvest:
    """Read every record of `inputs` (files or folders of JSONL/JSON) as exemplars.

    Raises:
        InputError: a missing input, or a line that is not a valid record (file:line: field).
    """
    if contract.retrieval is None:
        raise InputError(
            f"{contract.ref} declares no retrieval: an exemplar store needs a contract version "
            "with a `retrieval:` block (e.g. reply@2)"
        )
    field = contract.retrieval.field
    out = Harvest([])
    for text in inputs:
        for path in expand(InputSpec.parse(text)):
            for raw in iter_file(path, str(path)):
                where = f"{raw.file}:{raw.line}"
                if raw.error is not None or raw.value is None:
                    raise InputError(f"{where}: {raw.error or 'not a record'}")
                value: dict[str, Any] = {k: v for k, v in raw.value.items() if k != field}
                try:
                    model = contract.validate(value)
                except RecordError as exc:
                    raise InputError(f"{where}: {exc}") from exc
                out.records += 1
                dumped, _, rid = record_key(model)  # the id render-dataset gives it
                exemplar = exemplar_of(contract, rid, dumped)
                if exemplar is None:
                    out.skipped += 1
                else:
                    out.exemplars.append(exemplar)
    return out
