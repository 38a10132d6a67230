"""`json_native`: which schemas may render from the JSON dump `record_key` already made."""

from __future__ import annotations

import datetime
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer

from jarvis.schemas import ReplyInput, dump, json_native, record_key, validator


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Leaf(_M):
    a: str
    n: int = 0
    kind: Literal["x", "y"] = "x"


class Twice(_M):  # the same nested model in two fields is fine
    first: Leaf
    second: list[Leaf] = Field(default_factory=list)
    note: str | None = None


class NullableLeaf(_M):
    a: str | None = None  # nested null: the JSON dump drops it, the Python dump keeps it


class NestedNull(_M):
    leaf: NullableLeaf


class Floats(_M):
    x: float  # inf is null in JSON mode


class Mapping(_M):
    d: dict[str, str]


class Dated(_M):
    at: datetime.date


class Tupled(_M):
    t: tuple[str, str]


class Serialized(_M):
    a: str

    @field_serializer("a")
    def _shout(self, a: str) -> str:
        return a.upper()


class Computed(_M):
    a: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def b(self) -> str:
        return self.a


class Excluded(_M):
    a: str = Field(exclude=True)


class Recursive(_M):
    a: str
    children: list[Recursive] = Field(default_factory=list)


class OwnValidate(_M):
    a: str

    @classmethod
    def model_validate(cls, obj: object, **kwargs: object) -> OwnValidate:  # type: ignore[override]
        return super().model_validate({"a": "checked"})


class OwnDump(_M):
    a: str

    def model_dump(self, **kwargs: object) -> dict[str, object]:  # type: ignore[override]
        return {"a": "mine"}


@pytest.mark.parametrize("schema", [ReplyInput, Leaf, Twice])
def test_json_native_schemas_render_the_same_values_from_either_dump(
    schema: type[BaseModel],
) -> None:
    assert json_native(schema)
    samples = {
        ReplyInput: [
            {"messages": [{"sender": "a", "text": ""}], "reply": None, "tags": ["x"]},
            {
                "messages": [{"sender": "a", "text": "b"}],
                "retrieved": [{"message": "m", "reply": "r"}],
            },
        ],
        Leaf: [{"a": "b"}, {"a": "", "n": -3, "kind": "y"}],
        Twice: [
            {"first": {"a": "b"}, "second": [{"a": "c", "n": 2}]},
            {"first": {"a": ""}, "note": "n"},
        ],
    }[schema]
    for sample in samples:
        model = schema.model_validate(sample)
        record = dump(model, mode="json", exclude_none=True)
        fields = list(schema.model_fields)
        assert {f: record.get(f) for f in fields} == model.model_dump(include=set(fields))


@pytest.mark.parametrize(
    "schema",
    [
        NestedNull,
        Floats,
        Mapping,
        Dated,
        Tupled,
        Serialized,
        Computed,
        Excluded,
        Recursive,
        OwnDump,
    ],
)
def test_other_schemas_keep_their_own_python_dump(schema: type[BaseModel]) -> None:
    assert not json_native(schema)


def test_dump_is_model_dump_even_when_a_schema_overrides_it() -> None:
    model = OwnDump(a="x")
    assert dump(model) == {"a": "mine"}
    leaf = Leaf(a="x")
    assert dump(leaf, mode="json") == leaf.model_dump(mode="json")


def test_record_key_leaves_nulls_out_and_names_the_record() -> None:
    model = ReplyInput.model_validate({"messages": [{"sender": "a", "text": "b"}], "reply": None})
    record, digest, rid = record_key(model)
    assert record == {"messages": [{"sender": "a", "text": "b"}], "tags": []}
    assert rid == digest.hex()[:16]


def test_validator_is_model_validate_even_when_a_schema_overrides_it() -> None:
    assert validator(OwnValidate)({"a": "x"}).a == "checked"
    assert validator(Leaf) == Leaf.__pydantic_validator__.validate_python
    assert validator(Leaf)({"a": "x"}) == Leaf.model_validate({"a": "x"})
