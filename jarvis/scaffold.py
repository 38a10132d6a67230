"""`jarvis contract new NAME`: a working, locked contract of a user's own, in their root.

It writes the spec, the three templates, a schema module loaded by path from the root (see
`jarvis.schemas`), and sample records, then locks version 1: render-dataset, reply and the
audit work on it at once, with no `PYTHONPATH` and nothing installed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from jarvis.contract import LOCK_FILE, load_contract
from jarvis.errors import ContractError
from jarvis.files import atomic_write_text

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

SPEC = """\
# {name}: a contract of your own, scaffolded by `jarvis contract new`.
# Version 1 is locked: a change is a new version (`jarvis contract bump {name}`).
name: {name}
description: {name} (edit me)
versions:
  1:
    description: "A question and its answer in one short paragraph."
    schema: {module}:{cls}
    templates:
      system: system.j2
      user: user.j2
      assistant: assistant.j2
    parameters:
      assistant_name: Assistant
    generation:
      max_tokens: 256
      temperature: 0.0
      stop: []
    checks:
      - non_empty: {{}}
      - max_words: {{limit: 120}}
    special_tokens: refuse
"""

SCHEMA = '''\
"""The input schema of the {name} contract: a training record, or a runtime request.

jarvis loads this file by path from the contract root (no PYTHONPATH); its source is part
of the contract's fingerprint, so editing it changes every version that uses it.
"""

from typing import ClassVar

from pydantic import Field

from jarvis.schemas import Record


class {cls}(Record):
    """A question and, for training, its answer."""

    TARGET_FIELD: ClassVar[str] = "answer"

    id: str | None = None
    question: str = Field(min_length=1)
    answer: str | None = None
    tags: list[str] = Field(default_factory=list)
'''

TEMPLATES = {
    "system.j2": "You are {{ assistant_name }}. Answer in one short paragraph.\n",
    "user.j2": "{{ question }}\n",
    "assistant.j2": "{{ answer }}\n",
}

SAMPLES = [
    {"question": "What does a prompt contract fix?", "answer": "The prompt format, once."},
    {"question": "Why lock a version?", "answer": "So that it can never change silently."},
    {"question": "How do I change a prompt?", "answer": "Bump the contract to a new version."},
]


def _identifier(name: str) -> str:
    return name.replace("-", "_")


def new_contract(name: str, root: str | os.PathLike[str]) -> tuple[str, list[Path]]:
    """Scaffold contract `name` in `root` (created if needed) and lock its version 1.

    Args:
        name: lowercase letters, digits, `_` and `-`, starting with a letter.
        root: the contract root to write into.

    Returns:
        (the new ref, the files written).

    Raises:
        ContractError: a bad name, a contract or schema module of that name exists, or the
            root is the installed bundled root.
    """
    from jarvis.lock import writable_root, write_lock

    if not _NAME.match(name):
        raise ContractError(
            f"contract name {name!r}: lowercase letters, digits, _ and -, starting with a letter"
        )
    path = writable_root(Path(root).expanduser().absolute())
    module = f"{_identifier(name)}_schema"
    cls = "".join(part.capitalize() for part in re.split(r"[_-]", name)) + "Input"
    spec = path / "contracts" / f"{name}.yaml"
    files = {
        spec: SPEC.format(name=name, module=module, cls=cls),
        path / f"{module}.py": SCHEMA.format(name=name, cls=cls),
        **{path / "prompts" / name / "v1" / k: v for k, v in TEMPLATES.items()},
        path / "prompts" / name / "samples.jsonl": "".join(json.dumps(s) + "\n" for s in SAMPLES),
    }
    for file in files:
        if file.exists():
            raise ContractError(f"{file} exists; choose another name or remove it")
    if (path / "prompts" / name).exists():
        raise ContractError(f"{path / 'prompts' / name} exists; choose another name")
    for file, text in files.items():
        atomic_write_text(file, text)
    write_lock(path)
    contract = load_contract(f"{name}@1", root=path)
    assert contract.locked
    return contract.ref, [*files, path / LOCK_FILE]


def copy_examples(dest: str | os.PathLike[str]) -> Path:
    """Copy the example data bundled with jarvis (in the wheel too) into `dest`.

    Returns:
        The absolute `dest`.

    Raises:
        OutputExistsError: `dest` exists.
    """
    import shutil

    from jarvis.contract import bundled_root
    from jarvis.errors import OutputExistsError

    target = Path(dest).expanduser().absolute()
    if target.exists():
        raise OutputExistsError(f"{dest} exists; choose another folder")
    shutil.copytree(bundled_root() / "examples", target)
    return target
