"""Records and recipes shared by the dataset tests (`test_dataset`, `test_dataset_workers`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jarvis.dataset import Recipe

OUT_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "records.jsonl")


def reply(i: int, thread: str | None = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messages": [{"sender": "Sam", "text": f"are you coming at {i}?"}],
        "reply": f"ya see you at {i}",
        **extra,
    }
    if thread is not None:
        record["thread"] = thread
    return record


def code(i: int, perfect: bool = False) -> dict[str, Any]:
    if perfect:
        output = (
            '### Solution\n```python\ndef f(x):\n    """Double.\n\n    Args:\n        x: n.\n\n'
            f'    Returns:\n        2x.\n    """\n    return 2 * x + {i}\n```\n### Usage\n'
            "```python\nf(1)\n```\n### Sanity test\n```python\nassert f(0) == "
            f"{i}\n```"
        )
    else:
        output = f"def f(x):\n    return 2 * x + {i}"
    return {"instruction": f"Write function number {i}.", "output": output}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def recipe(*inputs: Path | str, contract: str = "reply@1", **settings: Any) -> Recipe:
    return Recipe.build(contract=contract, inputs=[str(i) for i in inputs], **settings)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
