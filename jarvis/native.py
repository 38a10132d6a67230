"""Plain validation: a JSON-native schema's check and dump of a parsed record, in one function.

render-dataset validates every record with pydantic and dumps it back to plain data (the
record's identity and the values its templates render). For a record parsed from JSON into
a schema of strings, ints, bools, lists, literals and nested models of such, both steps only
check types and sizes and rebuild the same data. `plain_dumper` compiles that check for one
schema into a generated function that returns exactly `model_dump(mode="json",
exclude_none=True)` of the validated model, or None; None sends the record to pydantic,
which gives the exact result or the exact error. So it answers only when pydantic surely
accepts, with no coercion to reproduce:

- a value of the field's exact type (`type(x) is str`; an int is never a bool), a literal
  of the same type and value, a list of such; a nested model as a dict;
- `min_length` and `max_length`, the only constraints it checks (any other: no function);
- a missing field with a default of None, a string, int or bool, or a `list` factory;
- every key a field's (an unknown key is pydantic's to refuse or drop).

A schema with validators, a `model_post_init`, its own `model_validate`, aliases, or config
beyond `extra`, `frozen`, `strict` and titles gets no function. Like `direct`, the source is
made only of this module's fragments and numbers: field names and literals are in `K`.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from types import UnionType
from typing import Any

from annotated_types import MaxLen, MinLen
from pydantic import BaseModel

from jarvis.schemas import json_native, validator

_CONFIG = frozenset({"extra", "frozen", "strict", "title", "json_schema_extra"})
_SCALARS = (str, int, bool)
_MISSING = object()


class _Unsupported(Exception):
    """The schema has something the generated check does not prove."""


@functools.cache
def plain_dumper(
    schema: type[BaseModel],
) -> Callable[[dict[str, Any]], dict[str, Any] | None] | None:
    """The generated check-and-dump for `schema`, or None when it has no plain form.

    Args:
        schema: a contract's input schema.

    Returns:
        A function of a parsed JSON object giving its `model_dump(mode="json",
        exclude_none=True)` when pydantic accepts it without coercion, else None.
    """
    if (
        not json_native(schema)
        or validator(schema) != schema.__pydantic_validator__.validate_python
    ):
        return None
    builder = _Builder()
    try:
        top = builder.model(schema)
    except _Unsupported:
        return None
    namespace: dict[str, Any] = {"__builtins__": {}, "K": tuple(builder.constants)}
    source = "\n".join(builder.lines)
    exec(compile(source, f"<plain {schema.__name__}>", "exec"), namespace)  # noqa: S102 (see above)
    function: Callable[[dict[str, Any]], dict[str, Any] | None] = namespace[f"m{top}"]
    function.jarvis_source = source  # type: ignore[attr-defined]
    return function


def _lengths(field: Any, var: str) -> list[str]:
    """The lines that return None where `var` breaks the field's `min_length`/`max_length`."""
    out = []
    for m in field.metadata:
        bound = m.min_length if isinstance(m, MinLen) else m.max_length
        sign = "<" if isinstance(m, MinLen) else ">"
        out.append(f"if len({var}) {sign} {int(bound)}: return None")
    return out


class _Builder:
    """Emits one function `m<k>(v)` per model; `v` is a dict, the result a dict or None."""

    def __init__(self) -> None:
        self.lines: list[str] = [
            "type = K[0]",
            "len = K[1]",
            "M = K[2]",
            "dict = K[3]",
            "list = K[4]",
        ]
        self.constants: list[Any] = [type, len, _MISSING, dict, list]
        self.models: dict[type[BaseModel], int] = {}

    def const(self, value: Any) -> str:
        self.constants.append(value)
        return f"K[{len(self.constants) - 1}]"

    def model(self, model: type[BaseModel]) -> int:
        if model in self.models:
            return self.models[model]
        self.check_supported(model)
        k = self.models[model] = len(self.models)
        body: list[str] = []
        for name, field in model.model_fields.items():
            body += self.field(name, field)
        lines = [f"def m{k}(v):", " n = 0", " o = {}", *body, " if n != len(v): return None"]
        self.lines += [*lines, " return o"]
        return k

    def check_supported(self, model: type[BaseModel]) -> None:
        """Raise `_Unsupported` where pydantic may do more than check types and sizes."""
        info = model.__pydantic_decorators__
        if (
            info.validators
            or info.field_validators
            or info.root_validators
            or info.model_validators
        ):
            raise _Unsupported
        if model.__pydantic_post_init__ is not None or model.__pydantic_root_model__:
            raise _Unsupported
        if not set(model.model_config) <= _CONFIG:
            raise _Unsupported
        for field in model.model_fields.values():
            if field.alias is not None or field.validation_alias is not None:
                raise _Unsupported
            if any(type(m) not in (MinLen, MaxLen) for m in field.metadata):
                raise _Unsupported

    def inline(self, model: type[BaseModel], var: str, depth: int) -> tuple[list[str], str] | None:
        """A model of required scalar fields checked in place, its dump a dict display: no
        call and no counting per object (a message of a thread), or None for the others."""
        self.check_supported(model)
        fields = model.model_fields
        for field in fields.values():
            kind = field.annotation
            origin, args = typing.get_origin(kind), typing.get_args(kind)
            scalar = kind in _SCALARS or origin is typing.Literal
            scalar = scalar or (
                origin in (typing.Union, UnionType) and all(a in _SCALARS for a in args)
            )
            if not field.is_required() or not scalar:
                return None
        # Every field present, each check refusing the missing marker M, and no other key.
        lines = [f"if type({var}) is not dict or len({var}) != {len(fields)}: return None"]
        items = []
        for i, (name, field) in enumerate(fields.items()):
            key, item = self.const(name), f"y{depth}_{i}"
            check, _ = self.value(field.annotation, item, depth + 1)
            lines += [f"{item} = {var}.get({key}, M)", *check, *_lengths(field, item)]
            items.append(f"{key}: {item}")
        dumped = f"d{depth}"
        return [*lines, f"{dumped} = {{{', '.join(items)}}}"], dumped

    def field(self, name: str, field: Any) -> list[str]:
        key = self.const(name)
        kind = field.annotation
        nullable = False
        if typing.get_origin(kind) in (typing.Union, UnionType) and type(None) in typing.get_args(
            kind
        ):
            nullable = True
            rest = tuple(a for a in typing.get_args(kind) if a is not type(None))
            kind = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 (a runtime value)
        out = [f" x = v.get({key}, M)", " if x is M:"]
        if field.is_required():
            out.append("  return None")
        elif field.default_factory is list:
            out.append(f"  o[{key}] = []")
        elif field.default_factory is None and field.default is None:
            out.append("  pass")
        elif field.default_factory is None and type(field.default) in _SCALARS:
            out.append(f"  o[{key}] = {self.const(field.default)}")
        else:  # another default: pydantic's to build
            out.append("  return None")
        out.append(" else:")
        out.append("  n += 1")
        inner = "  "
        if nullable:
            out.append("  if x is not None:")
            inner = "   "
        check, value = self.value(kind, "x", 0)
        out += [inner + line for line in [*check, *_lengths(field, "x")]]
        out.append(f"{inner}o[{key}] = {value}")
        return out

    def value(self, kind: Any, var: str, depth: int) -> tuple[list[str], str]:
        """(lines that return None unless `var` is valid, the expression of its dump)."""
        if kind in _SCALARS:
            return [f"if type({var}) is not {self.const(kind)}: return None"], var
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is typing.Literal:
            allowed = self.const(frozenset((type(a), a) for a in args))
            return [f"if type({var}) is dict or type({var}) is list: return None",
                    f"if (type({var}), {var}) not in {allowed}: return None"], var  # fmt: skip
        if origin in (typing.Union, UnionType):
            if not all(a in _SCALARS for a in args):
                raise _Unsupported
            types = self.const(frozenset(args))
            return [f"if type({var}) not in {types}: return None"], var
        if origin is list and len(args) == 1:
            item = f"e{depth}"
            check, dumped = self.value(args[0], item, depth + 1)
            lines = [f"if type({var}) is not list: return None"]
            if dumped == item and args[0] in _SCALARS:
                lines += [f"for {item} in {var}:", *(" " + c for c in check)]
                return lines, f"list({var})"
            out = f"l{depth}"
            lines += [f"{out} = []", f"for {item} in {var}:", *(" " + c for c in check),
                      f" {out}.append({dumped})"]  # fmt: skip
            return lines, out
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            inline = self.inline(kind, var, depth)
            if inline is not None:
                return inline
            k = self.model(kind)
            dumped = f"d{depth}"
            return [f"if type({var}) is not dict: return None", f"{dumped} = m{k}({var})",
                    f"if {dumped} is None: return None"], dumped  # fmt: skip
        raise _Unsupported
