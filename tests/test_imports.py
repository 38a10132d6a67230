"""`jarvis.imports`: transformers imported with one walk of its models folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A fresh interpreter (transformers not imported yet) imports AutoTokenizer, within the
# block or not, and prints the walk's cache and the lazy modules' import structures.
_SCRIPT = """
import contextlib, json, sys
from jarvis.imports import transformers_scanned_once

block = transformers_scanned_once() if sys.argv[1] == "once" else contextlib.nullcontext()
with block:
    from transformers import AutoTokenizer
import transformers, transformers.models
from transformers.utils import import_utils

def canon(value):
    if isinstance(value, dict):
        return sorted(([canon(k), canon(v)] for k, v in value.items()), key=repr)
    if isinstance(value, (set, frozenset)):
        return sorted((canon(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    return value

def structure(module):
    return canon(module._import_structure)

walk = import_utils.create_import_structure_from_path
info = walk.cache_info() if hasattr(walk, "cache_info") else None
print(json.dumps({
    "cached": info is not None,
    "maxsize": info.maxsize if info else None,
    "hits": info.hits if info else None,
    "finders": [type(f).__name__ for f in sys.meta_path],
    "top": structure(transformers),
    "models": structure(transformers.models),
    "auto": AutoTokenizer.__module__,
}))
"""


def _import(how: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, how], capture_output=True, text=True, timeout=120,
        check=True, env={**os.environ, "PYTHONHASHSEED": "0"},  # lists built from sets
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_one_walk_gives_transformers_the_same_modules() -> None:
    once, plain = _import("once"), _import("plain")
    for key in ("top", "models", "auto"):
        assert once[key] == plain[key], key
    assert "_WideCache" not in once["finders"]  # the finder leaves with the block
    if not once["cached"]:
        pytest.skip("this transformers does not cache its walk: nothing to widen")
    # The second walk (`transformers.models`) found every folder the first one read.
    assert once["maxsize"] is None
    assert isinstance(once["hits"], int) and once["hits"] > 100


def test_an_imported_transformers_is_left_as_it_is() -> None:
    import transformers  # noqa: F401

    from jarvis.imports import transformers_scanned_once

    before = list(sys.meta_path)
    with transformers_scanned_once():
        assert sys.meta_path == before
    assert sys.meta_path == before
