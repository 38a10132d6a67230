"""Every render-dataset setting (`Recipe`, from options or a recipe file) and the dataset
folder's file names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from jarvis.errors import (
    InputError,
    UsageError,
)
from jarvis.files import load_yaml
from jarvis.inputs import InputSpec
from jarvis.splits import parse_split

MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
REJECTS = "rejects.jsonl"
BUCKETS = 32  # shuffle buckets: one holds ~1/32 of the rendered rows in memory at a time
SHOWN_ERRORS = 5
Format = Literal["chat", "completions", "text"]


class Recipe(BaseModel):
    """Every setting of one `render-dataset` run; the manifest stores it to rebuild exactly."""

    model_config = ConfigDict(extra="forbid")

    contract: str
    inputs: list[str] = Field(min_length=1)
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    format: Format = "chat"
    train_only: list[str] = Field(default_factory=list)
    repeat: dict[str, int] = Field(default_factory=dict)
    min_ratio: dict[str, float] = Field(default_factory=dict)
    min_compliant: float | None = Field(default=None, ge=0.0, le=1.0)
    tokenizer: str | None = None
    max_seq_length: int = Field(default=2048, gt=0)
    on_overlength: Literal["fail", "drop"] = "fail"
    max_reject_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Each written split needs at least this many rows: mlx-lm cannot form a batch from fewer
    # (set it to the training --batch-size). `batch_size` is the old name, still accepted.
    min_split_rows: int = Field(
        default=4, gt=0, validation_alias=AliasChoices("min_split_rows", "batch_size")
    )
    # The contract root; None: `render_dataset(root=...)`, else $JARVIS_ROOT or the bundled
    # root. The manifest stores the root used, so the stored recipe rebuilds from anywhere.
    root: str | None = None

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, value: Any) -> tuple[float, float, float]:
        try:
            return parse_split(value)
        except InputError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                InputSpec.parse(text)
            except InputError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("repeat")
    @classmethod
    def _repeat(cls, value: dict[str, int]) -> dict[str, int]:
        for tag, n in value.items():
            if n < 1:
                raise ValueError(f"--repeat {tag}={n}: N must be at least 1")
        return value

    @field_validator("min_ratio")
    @classmethod
    def _min_ratio(cls, value: dict[str, float]) -> dict[str, float]:
        for tag, r in value.items():
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"--min-ratio {tag}={r}: R must be between 0 and 1")
        return value

    @classmethod
    def build(cls, **values: Any) -> Recipe:
        """Validate settings, turning pydantic errors into `InputError`.

        Raises:
            InputError: a setting is invalid (names it).
        """
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise UsageError(f"recipe: {loc}: {msg}" if loc else f"recipe: {msg}") from exc

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> Recipe:
        """Read a recipe YAML; relative input and tokenizer paths are relative to its folder.

        Args:
            path: the YAML file (a mapping of the same keys as the CLI options).
            overrides: settings that replace the file's (CLI options given explicitly).

        Raises:
            InputError: unreadable YAML or an invalid setting.
        """
        file = Path(path)
        try:
            data = load_yaml(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UsageError(f"{file}: cannot read the recipe: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError(f"{file}: a recipe is a YAML mapping of settings")
        base = file.parent
        if isinstance(data.get("inputs"), list):
            data["inputs"] = [_rebase(str(s), base) for s in data["inputs"]]
        if isinstance(data.get("tokenizer"), str):
            data["tokenizer"] = _rebase_path(data["tokenizer"], base)
        data.update(overrides)
        return cls.build(**data)

    def input_specs(self) -> list[InputSpec]:
        """Return the parsed `--input` values."""
        return [InputSpec.parse(s) for s in self.inputs]


def _rebase_path(path: str, base: Path) -> str:
    return path if Path(path).is_absolute() else os.path.normpath(base / path)


def _rebase(text: str, base: Path) -> str:
    spec = InputSpec.parse(text)
    return str(InputSpec(_rebase_path(spec.path, base), spec.tag))


def parse_assignments(
    values: Sequence[str], option: str, convert: type[int] | type[float]
) -> dict[str, Any]:
    """Parse repeated `TAG=VALUE` options (`--repeat perfect=5`).

    Raises:
        InputError: a value is not `TAG=NUMBER`.
    """
    out: dict[str, Any] = {}
    for text in values:
        tag, sep, raw = text.partition("=")
        try:
            if not sep or not tag:
                raise ValueError
            out[tag] = convert(raw)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            raise UsageError(f"{option} {text!r}: expected TAG=N with N {kind}") from None
    return out
