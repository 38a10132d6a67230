"""`plain_dumper`: a record's check and dump without pydantic, the same as pydantic's or None."""

from __future__ import annotations

from typing import Any, Literal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jarvis.native import plain_dumper
from jarvis.schemas import CodegenInput, ReplyInput, dump, validator


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Leaf(_M):
    a: str
    n: int = 0
    kind: Literal["x", "y", 1, True] = "x"


class Pair(_M):  # required scalars only: checked in place, not by a function of its own
    a: str = Field(min_length=1)
    kind: Literal["x", 1]
    u: int | str


class Rich(_M):
    id: str | None = None
    s: str = Field(default="dflt", min_length=1, max_length=5)
    b: bool = False
    u: int | str = 0
    leaf: Leaf | None = None
    leaves: list[Leaf] = Field(default_factory=list, max_length=3)
    grid: list[list[str]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    picks: list[Literal["p", "q"]] = Field(default_factory=lambda: ["p"])  # pydantic's default
    must: int | None
    pair: Pair | None = None
    pairs: list[Pair] = Field(default_factory=list)


class Lax(BaseModel):  # lax mode, unknown keys dropped: exact types still pass unchanged
    a: str
    n: int = 1
    leaf: Leaf | None = None


SCHEMAS = [ReplyInput, CodegenInput, Rich, Lax]
KEYS = sorted(
    {name for schema in (*SCHEMAS, Leaf, Pair) for name in schema.model_fields}
    | {"sender", "text", "message", "extra"}
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["", "x", "y", "p", "q", "abc", "toolongvalue", "1"]),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    ),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(KEYS), values, max_size=9)


def _pydantic(schema: type[BaseModel], value: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return dump(validator(schema)(value), mode="json", exclude_none=True)
    except ValidationError:
        return None


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=records)
def test_an_answer_is_pydantics_dump_exactly(
    schema: type[BaseModel], value: dict[str, Any]
) -> None:
    plain = plain_dumper(schema)
    assert plain is not None
    out = plain(value)
    if out is not None:  # orjson keeps key order and tells True from 1
        assert orjson.dumps(out) == orjson.dumps(_pydantic(schema, value))


VALID: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (ReplyInput, {"messages": [{"sender": "Sam", "text": "hi"}], "reply": "yo"}),
    (ReplyInput, {"id": "a", "thread": None, "messages": [{"text": "", "sender": "S"}],
                  "retrieved": [{"message": "m", "reply": "r"}], "tags": ["perfect"]}),
    (CodegenInput, {"instruction": "Add", "output": "x + y"}),
    (Rich, {"must": None, "u": "s", "leaf": {"a": "", "kind": True}, "grid": [["a"], []],
            "picks": []}),
    (Rich, {"must": 3, "s": "abcde", "leaves": [{"a": "z", "kind": 1}], "picks": ["q"]}),
    (Rich, {"must": 0, "picks": [], "pair": {"u": 1, "a": "b", "kind": "x"},
            "pairs": [{"a": "c", "kind": 1, "u": "v"}, {"kind": "x", "u": 2, "a": "d"}]}),
    (Lax, {"a": "x", "leaf": {"a": "y", "n": -1}}),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "value"), VALID)
def test_valid_records_take_the_plain_path(schema: type[BaseModel], value: dict[str, Any]) -> None:
    plain = plain_dumper(schema)
    assert plain is not None
    out = plain(value)
    assert out is not None
    assert orjson.dumps(out) == orjson.dumps(_pydantic(schema, value))


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (ReplyInput, {"messages": []}),  # min_length
        (ReplyInput, {"messages": [{"sender": "S", "text": "t"}], "extra": 1}),
        (ReplyInput, {"messages": [{"sender": "S", "text": 1}]}),
        (ReplyInput, {"messages": [{"sender": "S", "text": "t", "extra": 1}]}),  # in place
        (ReplyInput, {"messages": [{"sender": "S"}]}),
        (Rich, {"must": 1, "picks": [], "pair": {"a": "b", "kind": 1, "u": 2, "n": 0}}),
        (Rich, {"must": 1, "picks": [], "pairs": [{"a": "", "kind": 1, "u": 2}]}),  # min_length
        (Rich, {"must": True}),  # an int is never a bool
        (Rich, {"must": 1, "s": "abcdef"}),  # max_length
        (Rich, {"must": 1, "u": 1.5}),
        (Rich, {"must": 1, "leaf": {"a": "x", "kind": 2}}),
        (Rich, {}),  # `must` is required, though nullable
        (Rich, {"must": 1}),  # `picks` missing: its factory is pydantic's to call
        (Lax, {"a": "x", "unknown": 1}),  # pydantic drops it: its answer
    ],
)
def test_anything_else_goes_to_pydantic(schema: type[BaseModel], value: dict[str, Any]) -> None:
    plain = plain_dumper(schema)
    assert plain is not None
    assert plain(value) is None


class Validated(_M):
    a: str

    @field_validator("a")
    @classmethod
    def _strip(cls, a: str) -> str:
        return a.strip()


class ModelValidated(_M):
    a: str

    @model_validator(mode="after")
    def _check(self) -> ModelValidated:
        return self


class Aliased(_M):
    a: str = Field(validation_alias=AliasChoices("a", "A"))


class Stripped(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)
    a: str


class Patterned(_M):
    a: str = Field(pattern="^x")


class Floated(_M):
    x: float


class PostInit(_M):
    a: str

    def model_post_init(self, context: Any) -> None:
        pass


class OwnValidate(_M):
    a: str

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> OwnValidate:  # type: ignore[override]
        return super().model_validate(obj, **kwargs)


class NestedValidated(_M):
    inner: list[Validated]


@pytest.mark.parametrize(
    "schema",
    [Validated, ModelValidated, Aliased, Stripped, Patterned, Floated, PostInit, OwnValidate,
     NestedValidated],
    ids=lambda s: s.__name__,
)  # fmt: skip
def test_schemas_it_cannot_prove_get_no_function(schema: type[BaseModel]) -> None:
    assert plain_dumper(schema) is None


def test_the_source_holds_no_name_of_the_schema() -> None:
    import ast

    plain = plain_dumper(ReplyInput)
    assert plain is not None
    tree = ast.parse(plain.jarvis_source)  # type: ignore[attr-defined]
    # Field names reach it only through K: no string in the code, no name but its own.
    constants = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert not {c for c in constants if isinstance(c, str | bytes)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & set(ReplyInput.model_fields)
    # A message or an exemplar (required scalars only) is checked in place: y1_*, no m1.
    assert names == {"K", "M", "type", "len", "dict", "list", "v", "n", "o", "x", "e0", "l0",
                     "d1", "y1_0", "y1_1"}  # fmt: skip


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    inner = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    return [at] + [p for k, v in inner for p in _paths(v, (*at, k))]


@settings(max_examples=600, deadline=None)
@given(case=st.sampled_from(VALID), data=st.data())
def test_near_valid_records_agree_with_pydantic(
    case: tuple[type[BaseModel], dict[str, Any]], data: st.DataObject
) -> None:
    schema, valid = case
    value = orjson.loads(orjson.dumps(valid))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(value)[1:]))
        parent = value
        for k in path[:-1]:
            parent = parent[k]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(values)
        if not _paths(value)[1:]:
            break
    plain = plain_dumper(schema)
    assert plain is not None
    out = plain(value)
    if out is not None:
        assert orjson.dumps(out) == orjson.dumps(_pydantic(schema, value))
