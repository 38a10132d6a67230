"""Output checks: does a reply (or a training target) have the contract's required format?

A contract lists checks by name with arguments, e.g. `- sections: {required: ["### Solution"]}`.
The same functions score training targets (`render-dataset`), generated replies
(`ReplyEngine`, `jarvis reply --strict`) and evaluations (`jarvis eval`).
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jarvis.errors import ContractError


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one text."""

    name: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


_FENCE = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL)


def _code_blocks(text: str) -> list[str]:
    return _FENCE.findall(text)


# The verdicts of the simple checks, each defined once: the check adds its detail to it, and
# render-dataset, which needs only pass or fail, calls it alone (`verdict`).
def _has_text(text: str) -> bool:
    return bool(text.strip())


def _word_count(text: str) -> int:
    return len(text.split())


def _within_words(text: str, *, limit: int) -> bool:
    return _word_count(text) <= limit


def _one_line(text: str) -> bool:
    return "\n" not in text.strip()


def non_empty(text: str) -> tuple[bool, str]:
    """The text has a non-whitespace character."""
    ok = _has_text(text)
    return (ok, "" if ok else "empty output")


def max_words(text: str, *, limit: int) -> tuple[bool, str]:
    """The text has at most `limit` words."""
    n = _word_count(text)
    return (n <= limit, f"{n} words (limit {limit})")


def no_newlines(text: str) -> tuple[bool, str]:
    """The text is a single line (a text message, not a paragraph)."""
    ok = _one_line(text)
    return (ok, "" if ok else "contains a line break")


def _sections_in_order(text: str, *, required: Sequence[str]) -> bool:
    # A heading that is nowhere in the text is on none of its lines: most training targets
    # of a dataset fail here, without splitting the text into lines.
    for heading in required:
        if heading not in text:
            return False
    return sections(text, required=required)[0]


def sections(text: str, *, required: Sequence[str]) -> tuple[bool, str]:
    """Every required section heading appears on a line of its own, in order."""
    lines = [line.strip() for line in text.splitlines()]
    missing = [s for s in required if s not in lines]
    if missing:
        return (False, "missing " + ", ".join(repr(s) for s in missing))
    positions = [lines.index(s) for s in required]
    if positions != sorted(positions):
        return (False, "sections out of order")
    return (True, "")


# Generated or training code longer than this is not parsed: a check must stay fast and
# bounded on any model output (`ast.parse` of a 12 MB block takes tens of seconds).
MAX_CODE_CHARS = 100_000


@functools.lru_cache(maxsize=256)
def _parse(block: str) -> ast.Module | str:
    """Parse one code block once for every check; the reason as a string when it fails."""
    if len(block) > MAX_CODE_CHARS:
        return f"too long to check ({len(block):,} characters > {MAX_CODE_CHARS:,})"
    try:
        return ast.parse(block)
    except SyntaxError as exc:
        return f"{exc.msg} (line {exc.lineno})"
    except (RecursionError, MemoryError):
        return "nested too deeply to parse"
    except ValueError as exc:  # null bytes, on Python < 3.12
        return str(exc)


def python_parses(text: str) -> tuple[bool, str]:
    """There is at least one ```python block, and every one parses."""
    blocks = _code_blocks(text)
    if not blocks:
        return (False, "no ```python code block")
    for i, block in enumerate(blocks):
        tree = _parse(block)
        if isinstance(tree, str):
            return (False, f"code block {i + 1}: {tree}")
    return (True, f"{len(blocks)} block(s)")


def docstring_sections(text: str, *, required: Sequence[str]) -> tuple[bool, str]:
    """A function in the code has a docstring containing every required label."""
    for block in _code_blocks(text):
        tree = _parse(block)
        if isinstance(tree, str):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node) or ""
                if all(label in doc for label in required):
                    return (True, f"function {node.name}")
    return (False, "no function docstring with " + ", ".join(required))


CheckFn = Callable[..., tuple[bool, str]]
CHECKS: dict[str, CheckFn] = {
    "docstring_sections": docstring_sections,
    "max_words": max_words,
    "no_newlines": no_newlines,
    "non_empty": non_empty,
    "python_parses": python_parses,
    "sections": sections,
}


# The detail string costs as much as these checks: render-dataset scores by the verdict.
_VERDICTS: dict[str, Callable[..., bool]] = {
    "max_words": _within_words,
    "no_newlines": _one_line,
    "non_empty": _has_text,
    "sections": _sections_in_order,
}


def verdict(name: str, args: Mapping[str, Any]) -> Callable[[str], bool]:
    """Whether a text passes check `name` with `args`: `CHECKS[name](text, **args)[0]`.

    Args:
        name: a check's name (`validate_check_specs` has accepted it).
        args: its arguments.
    """
    fast = _VERDICTS.get(name)
    if fast is not None:
        return functools.partial(fast, **args)
    check = functools.partial(CHECKS[name], **args)
    return lambda text: check(text)[0]


def validate_check_specs(specs: Sequence[Mapping[str, Mapping[str, Any]]], *, where: str) -> None:
    """Check that each spec names a known check with arguments it accepts.

    Raises:
        ContractError: unknown check name or bad arguments.
    """
    import inspect

    for i, spec in enumerate(specs):
        if len(spec) != 1:
            raise ContractError(f"{where}[{i}]: one check name per item, got {sorted(spec)}")
        ((name, args),) = spec.items()
        fn = CHECKS.get(name)
        if fn is None:
            raise ContractError(f"{where}[{i}]: unknown check {name!r} (known: {sorted(CHECKS)})")
        try:
            inspect.signature(fn).bind("", **(args or {}))
        except TypeError as exc:
            raise ContractError(f"{where}[{i}]: {name}: {exc}") from exc


def run_checks(text: str, specs: Sequence[Mapping[str, Mapping[str, Any]]]) -> list[CheckResult]:
    """Run every check of a contract on `text`.

    Args:
        text: a reply or training target.
        specs: the contract's `checks` list.

    Returns:
        One `CheckResult` per check, in the contract's order.
    """
    results = []
    for spec in specs:
        ((name, args),) = spec.items()
        passed, detail = CHECKS[name](text, **(args or {}))
        results.append(CheckResult(name, passed, detail))
    return results
