"""Importing transformers without walking its source tree twice.

transformers 5 builds its lazy modules' import structure by reading every file under
`transformers/models` (`import_utils.create_import_structure_from_path`, one call per
folder): once for `import transformers`, and again when `transformers.models` is first
imported (`AutoTokenizer` and every class import it). The walk is behind an `lru_cache`, but
of the default 128 entries for its 567 folders, so the second walk finds nothing cached:
0.27 s of a 1.2 s tokenizer load on this machine, paid by every command that loads one.
`transformers_scanned_once` gives that cache room for every folder while transformers is
imported; the walk reads files and returns what it read, so a cached answer is the answer.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

_MODULE = "transformers.utils.import_utils"
_WALK = "create_import_structure_from_path"


class _WideCache(importlib.abc.MetaPathFinder):
    """Finds `transformers.utils.import_utils` as Python would, and once it has run, gives
    its walk an unbounded cache (where it has the `lru_cache` described above)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = spec.loader if spec is not None else None
        run = getattr(loader, "exec_module", None)
        if run is None:
            return spec

        def exec_module(module: ModuleType) -> None:
            run(module)
            walk = getattr(module, _WALK, None)
            inner = getattr(walk, "__wrapped__", None)
            if callable(inner) and hasattr(walk, "cache_info"):
                setattr(module, _WALK, functools.cache(inner))

        setattr(loader, "exec_module", exec_module)  # this spec's loader only  # noqa: B010
        return spec


@contextlib.contextmanager
def transformers_scanned_once() -> Iterator[None]:
    """Within the block, a first import of transformers walks its models folder once.

    Nothing changes where transformers is already imported, or where its internals differ
    from those described in this module's docstring.
    """
    if "transformers" in sys.modules:
        yield
        return
    finder = _WideCache()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
