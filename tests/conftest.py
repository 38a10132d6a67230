"""Shared fixtures: a tiny offline mlx-lm model, a small rendered dataset, a trained adapter.

Built once per session (a few seconds on 2 CPU cores) and reused by every test module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Replies written in the persona's voice; enough rows for batch size 2 in train and valid.
REPLY_RECORDS: list[dict[str, Any]] = [
    {"messages": [{"sender": "Sam", "text": "you coming tonight?"}], "reply": "yea omw"},
    {"messages": [{"sender": "Ana", "text": "dinner at 7?"}], "reply": "7 works"},
    {"messages": [{"sender": "Sam", "text": "did you pay rent"}], "reply": "ya sent it"},
    {"messages": [{"sender": "Lee", "text": "where are you"}], "reply": "10 min away"},
    {"messages": [{"sender": "Ana", "text": "lol did you see that"}], "reply": "lmao yes"},
    {"messages": [{"sender": "Sam", "text": "gym tmrw?"}], "reply": "down, 8am?"},
    {"messages": [{"sender": "Lee", "text": "can you call me"}], "reply": "in a sec"},
    {"messages": [{"sender": "Ana", "text": "happy bday!!"}], "reply": "thank u!!"},
    {"messages": [{"sender": "Sam", "text": "movie later?"}], "reply": "which one"},
    {"messages": [{"sender": "Lee", "text": "you up?"}], "reply": "ya whats up"},
    {"messages": [{"sender": "Ana", "text": "coffee?"}], "reply": "always"},
    {"messages": [{"sender": "Sam", "text": "send the pic"}], "reply": "sending now"},
]


def write_dataset(
    dest: Path,
    records: Sequence[dict[str, Any]] = REPLY_RECORDS,
    *,
    contract: str = "reply@1",
    root: Path | None = None,
    batch_size: int = 2,
) -> Path:
    """Render `records` with `jarvis.dataset.render_dataset` into `dest` (8/2/2 rows for 12)."""
    from jarvis.dataset import Recipe, render_dataset

    raw = dest.parent / f"{dest.name}.input.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    recipe = Recipe(
        contract=contract, inputs=[str(raw)], split=(0.6, 0.2, 0.2), batch_size=batch_size
    )
    render_dataset(recipe, dest, root=root)
    return dest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama model folder (ChatML template, EOS <|endoftext|>), built once."""
    from jarvis.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def reply_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reply@1 chat dataset rendered by `render_dataset`: 8 train, 2 valid, 2 test rows."""
    return write_dataset(tmp_path_factory.mktemp("data") / "reply")


@pytest.fixture(scope="session")
def make_dataset() -> Callable[..., Path]:
    """`write_dataset(dest, records=..., contract=..., root=..., batch_size=...)`."""
    return write_dataset


def train_tiny(dataset: Path, model: Path, out: Path, iters: int = 3) -> Path:
    """A stamped adapter: a few LoRA iterations of `jarvis.train.train` on the tiny model."""
    from jarvis.train import TrainOptions, train

    options = TrainOptions(iters=iters, batch_size=2, learning_rate=1e-3, num_layers=2, rank=4)
    return train(dataset, str(model), out, options).adapter_path


@pytest.fixture(scope="session")
def trained_adapter(
    tiny_model: Path, reply_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A stamped reply@1 adapter: 3 LoRA iterations on the tiny model."""
    return train_tiny(reply_dataset, tiny_model, tmp_path_factory.mktemp("adapters") / "reply")


@pytest.fixture(scope="session")
def varied_adapter(
    tiny_model: Path, reply_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An adapter whose greedy replies differ from prompt to prompt. The tiny base answers
    "\n" to everything and a 3-step adapter EOS: comparing those would compare nothing."""
    from jarvis.train import TrainOptions, train

    out = tmp_path_factory.mktemp("varied") / "adapter"
    options = TrainOptions(iters=150, batch_size=2, learning_rate=5e-3, num_layers=2, rank=8)
    return train(reply_dataset, str(tiny_model), out, options).adapter_path
