"""Input schemas: the pydantic models a contract's records are validated against.

A contract names a built-in schema (`schema: ReplyInput`) or `module:Class` for a
`module.py` file in the contract root itself: read by path (never an installed module, no
`PYTHONPATH`), its source bytes part of the fingerprint and checked against the lock before
it runs.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from jarvis.errors import ContractError


class Record(BaseModel):
    """Base for input schemas: strict, frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Fields carried through to outputs but never rendered into a prompt.
    METADATA_FIELDS: ClassVar[frozenset[str]] = frozenset({"id", "tags"})
    # The field holding the assistant target; absent at runtime.
    TARGET_FIELD: ClassVar[str] = ""


# pydantic's model_validate and model_dump are thin wrappers over the class's validator and
# serializer; calling those directly is the same work a microsecond sooner (render-dataset
# validates and dumps every record). A schema that overrides either keeps its own.
@functools.cache
def validator(schema: type[BaseModel]) -> Callable[[Any], Any]:
    """`schema.model_validate`, or the validator it wraps when the schema does not override it.

    Args:
        schema: a record schema (the cache holds one entry per class).
    """
    own = getattr(schema.model_validate, "__func__", None)
    if own is getattr(BaseModel.model_validate, "__func__", None):
        return schema.__pydantic_validator__.validate_python
    return schema.model_validate


@functools.cache
def _serializer(kind: type[BaseModel]) -> Any:
    return kind.__pydantic_serializer__ if kind.model_dump is BaseModel.model_dump else None


def dump(model: BaseModel, **options: Any) -> dict[str, Any]:
    """`model.model_dump(**options)`, exactly (the serializer's own call where it is the same).

    Args:
        model: a validated record.
        options: `mode`, `include`, `exclude_none`, as for `model_dump`.
    """
    serializer = _serializer(type(model))
    if serializer is None:
        return model.model_dump(**options)
    return serializer.to_python(model, **options)  # type: ignore[no-any-return]


@functools.cache
def json_native(schema: type[BaseModel]) -> bool:
    """Whether `record_key`'s JSON dump (nulls left out) holds the same top-level values as
    the Python dump a template renders: every field a string, int, bool, list or nested model
    of such, a null only at the top level (where `.get` gives it back), and no serializer,
    computed or excluded field anywhere. render-dataset then dumps each record once.

    Args:
        schema: a contract's input schema.
    """
    return _native_model(schema, top=True, seen=set())


_CONSTRAINTS = ("annotated_types", "pydantic._internal._fields", "pydantic.types")


def _native_model(model: type[BaseModel], *, top: bool, seen: set[type]) -> bool:
    if model in seen:  # a recursive model: not worth proving
        return False
    seen.add(model)
    try:
        return _native_fields(model, top=top, seen=seen)
    finally:
        seen.discard(model)


def _native_fields(model: type[BaseModel], *, top: bool, seen: set[type]) -> bool:
    info = model.__pydantic_decorators__
    if info.field_serializers or info.model_serializers or info.computed_fields:
        return False
    if _serializer(model) is None:  # its own model_dump
        return False
    for field in model.model_fields.values():
        if field.exclude or (not top and field.default is None):
            return False
        if any(type(m).__module__ not in _CONSTRAINTS for m in field.metadata):
            return False
        if not _native_type(field.annotation, nullable=top, seen=seen):
            return False
    return True


def _native_type(kind: Any, *, nullable: bool, seen: set[type]) -> bool:
    if kind in (str, int, bool):
        return True
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and not nullable:
            return False
        return all(_native_type(a, nullable=False, seen=seen) for a in args if a is not type(None))
    if origin is list and len(args) == 1:
        return _native_type(args[0], nullable=False, seen=seen)
    if origin is typing.Literal:
        return all(type(a) in (str, int, bool) for a in args)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return _native_model(kind, top=False, seen=seen)
    return False


def record_key(model: Record) -> tuple[dict[str, Any], bytes, str]:
    """A validated record's identity, the same in render-dataset and `jarvis index`.

    Returns:
        (its JSON dump without nulls, the sha256 of that dump with sorted keys (an explicit
        null counts as absent), its id: its own `id` field, else the digest's first 16 hex).
    """
    record, digest, rid, _ = record_identity(model)
    return record, digest, rid


def record_identity(model: Record) -> tuple[dict[str, Any], bytes, str, bytes]:
    """`record_key`, and the sorted-key JSON its digest hashes (render-dataset writes it)."""
    return dump_identity(type(model), dump(model, mode="json", exclude_none=True))


def dump_identity(
    schema: type[BaseModel], record: dict[str, Any]
) -> tuple[dict[str, Any], bytes, str, bytes]:
    """`record_identity` from the record's dump (`model_dump(mode="json", exclude_none=True)`).

    Args:
        schema: the record's schema (whether it has an `id` field).
        record: the dump.
    """
    text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(text).digest()
    explicit = record.get("id") if "id" in schema.__pydantic_fields__ else None
    return record, digest, explicit if isinstance(explicit, str) else digest.hex()[:16], text


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


_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SchemaSource:
    """A user's schema module: the `.py` file in the contract root and its source bytes."""

    file: str
    path: Path
    source: bytes


def split_schema_ref(name: str) -> tuple[str, str] | None:
    """Split `module:Class` into its parts; None for a built-in name.

    Raises:
        ContractError: the reference is not `module:Class` with plain identifiers (no dots,
            no paths), e.g. `':X'`, `'..evil:X'`, `'.:X'`, `'a.b:X'`.
    """
    if name in SCHEMAS:
        return None
    if ":" not in name:
        known = ", ".join(sorted(SCHEMAS))
        raise ContractError(
            f"unknown schema {name!r} (known: {known}, or module:Class for a module.py file "
            "in the contract root)"
        )
    module, _, attr = name.partition(":")
    if not _MODULE.match(module) or not _MODULE.match(attr):
        raise ContractError(
            f"schema {name!r}: expected module:Class, where module.py is a file in the contract "
            "root (plain names: no dots, no paths)"
        )
    return module, attr


def read_schema_source(name: str, root: Path) -> SchemaSource | None:
    """Read the source of a user's schema module without running it (None for a built-in).

    Raises:
        ContractError: a bad reference, or no such `.py` file in the root itself.
    """
    parts = split_schema_ref(name)
    if parts is None:
        return None
    file = f"{parts[0]}.py"
    path = root / file
    if path.is_symlink() or not path.is_file():
        raise ContractError(
            f"schema {name!r}: no file {file} in the contract root {root} (a schema module is "
            "loaded only from there, by path; installed modules are never imported)"
        )
    return SchemaSource(file, path.resolve(), path.read_bytes())


def resolve_schema(name: str, source: SchemaSource | None = None) -> type[Record]:
    """Return the schema class for a contract's `schema:` value.

    Args:
        name: a name from `SCHEMAS`, or `module:Class`.
        source: for `module:Class`, the module's source read by `read_schema_source` (and
            already checked against the lock by the caller); it is run as a fresh module.

    Returns:
        The pydantic model class.

    Raises:
        ContractError: unknown name, the module fails to run, or the class is not a
            `jarvis.schemas.Record`.
    """
    parts = split_schema_ref(name)
    if parts is None:
        return SCHEMAS[name]
    if source is None:
        raise ContractError(f"schema {name!r}: the module's source was not read")
    module_name = f"_jarvis_schema_{hashlib.sha256(source.source).hexdigest()[:16]}"
    module = sys.modules.get(module_name)
    if module is None:
        module = types.ModuleType(module_name)
        module.__file__ = str(source.path)
        sys.modules[module_name] = module  # pydantic resolves annotations through it
        try:
            code = compile(source.source, str(source.path), "exec")
            exec(code, module.__dict__)  # noqa: S102 - the user's own file in their contract root
        except Exception as exc:  # a user's module can raise anything while it runs
            del sys.modules[module_name]
            raise ContractError(
                f"schema {name!r}: {source.file} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
    cls = getattr(module, parts[1], None)
    if isinstance(cls, type) and issubclass(cls, Record):
        return cls
    raise ContractError(
        f"schema {name!r}: {source.file} has no subclass of jarvis.schemas.Record "
        f"named {parts[1]!r}"
    )
