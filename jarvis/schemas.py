"""Input schemas: the pydantic models a contract's records are validated against.

A contract names its schema (`schema: ReplyInput`); `resolve_schema` also accepts
`package.module:Class` so an app can keep its own schemas.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from jarvis.errors import ContractError


class Record(BaseModel):
    """Base for input schemas: strict, frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Fields carried through to outputs but never rendered into a prompt.
    METADATA_FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "tags"})
    # The field holding the assistant target; absent at runtime.
    TARGET_FIELD: ClassVar[str] = ""


class Message(BaseModel):
    """One text message of a conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sender: str = Field(min_length=1)
    text: str


class Exemplar(BaseModel):
    """A retrieved past exchange: what someone wrote and how the persona replied."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    message: str
    reply: str


class ReplyInput(Record):
    """A texting thread and, for training, the persona's reply."""

    METADATA_FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "thread", "tags"})
    TARGET_FIELD: ClassVar[str] = "reply"

    id: str | None = None
    thread: str | None = None
    messages: list[Message] = Field(min_length=1)
    reply: str | None = None
    retrieved: list[Exemplar] | None = None
    tags: list[str] = Field(default_factory=list)


class CodegenInput(Record):
    """An Alpaca-style code instruction with its answer."""

    TARGET_FIELD: ClassVar[str] = "output"

    id: str | None = None
    instruction: str = Field(min_length=1)
    input: str = ""
    output: str | None = None
    tags: list[str] = Field(default_factory=list)


SCHEMAS: dict[str, type[Record]] = {
    "ReplyInput": ReplyInput,
    "CodegenInput": CodegenInput,
}


def resolve_schema(name: str) -> type[Record]:
    """Return the schema class for a contract's `schema:` value.

    Args:
        name: a name from `SCHEMAS`, or `package.module:Class`.

    Returns:
        The pydantic model class.

    Raises:
        ContractError: unknown name, or the class is not a `jarvis.schemas.Record`.
    """
    if name in SCHEMAS:
        return SCHEMAS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ContractError(f"schema {name!r} cannot be imported: {exc}") from exc
        if isinstance(cls, type) and issubclass(cls, Record):
            return cls
        raise ContractError(f"schema {name!r} is not a subclass of jarvis.schemas.Record")
    known = ", ".join(sorted(SCHEMAS))
    raise ContractError(f"unknown schema {name!r} (known: {known}, or module:Class)")
