"""The one render path: a strict, sandboxed Jinja environment and the special-token policy.

Training rows and runtime prompts are both produced here, so they cannot drift.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import concat

from jarvis.direct import DirectTemplate, compile_direct
from jarvis.errors import ContractError, SpecialTokenError

# Whitespace behaviour is explicit (never Jinja's defaults by accident) and is hashed into
# every contract's fingerprint, so changing it changes every fingerprint.
RENDERER_OPTIONS: dict[str, Any] = {
    "engine": "jinja2.sandbox.ImmutableSandboxedEnvironment",
    "undefined": "StrictUndefined",
    "autoescape": False,
    "trim_blocks": True,
    "lstrip_blocks": True,
    "keep_trailing_newline": False,
    "newline_sequence": "\n",
}

# Chat control strings of the common template families. Refused in any value by default.
CONTROL_STRINGS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "[INST]",
    "[/INST]",
    "<s>",
    "</s>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|startoftext|>",
)

# The documented escape: a ZERO WIDTH SPACE after the first character breaks the control
# string for every tokenizer while leaving the visible text unchanged.
ESCAPE_MARK = "\u200b"


class ContractLoader(jinja2.BaseLoader):
    """Loads templates only from inside one contract folder (no `..`, no symlink escape)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        # Each template's source as Jinja compiled it: the direct renderer compiles the same.
        self.sources: dict[str, str] = {}

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        pieces = jinja2.loaders.split_template_path(template)
        path = self.folder.joinpath(*pieces).resolve()
        if not path.is_relative_to(self.folder):
            raise jinja2.TemplateNotFound(f"{template} (outside {self.folder})")
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        try:
            source = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(f"{path}: not UTF-8: {exc.reason} at byte {exc.start}") from exc
        mtime = path.stat().st_mtime
        self.sources[template] = source
        return source, os.fspath(path), lambda: path.stat().st_mtime == mtime


_DICT_ATTRIBUTES = frozenset(dir(dict))
# LoopContext's public, read-only attributes: the sandbox allows every one of them anyway.
_LOOP_ATTRIBUTES = frozenset(
    ("index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
     "previtem", "nextitem")
)  # fmt: skip


# Bounds on what a template may compute: a prompt renders its record, it computes nothing
# big. Jinja's own sandbox allows ranges of 100,000 and any repetition or power.
MAX_RANGE = 10_000
MAX_REPEAT = 100_000
# String methods that take format specs (`{:>999999999}`) or reach attributes (`{0.x}`).
_FORMAT_METHODS = frozenset({"format", "format_map"})


# All `range` loops of one render together: nested loops multiply, so each range is small
# yet the product is bounded too.
MAX_ITERATIONS = 100_000
_BUDGET = threading.local()


class _BudgetedRange:
    """A `range` whose iteration draws on the render's iteration budget."""

    def __init__(self, values: range) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, item: object) -> bool:
        return item in self._values

    def __iter__(self) -> Iterator[int]:
        for value in self._values:
            _BUDGET.left = left = getattr(_BUDGET, "left", MAX_ITERATIONS) - 1
            if left < 0:
                raise SecurityError(
                    f"range loops iterated over {MAX_ITERATIONS:,} times in one render"
                )
            yield value


def _bounded_range(*args: int) -> _BudgetedRange:
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise SecurityError(
            f"range of {len(values):,} items; a contract template may use at most {MAX_RANGE:,}"
        )
    return _BudgetedRange(values)


def check_template_ast(node: jinja2.nodes.Node, where: str) -> None:
    """Refuse, at load, what a prompt template never needs and a hostile one uses.

    Refused: `**`, names starting with `_` (`x.__class__`, `x["_y"]`), `str.format` and
    `format_map`, and a repetition (`*`) or `range` over a constant above its bound.

    Raises:
        ContractError: names the template file, its line and the construct.
    """
    nodes = jinja2.nodes

    def refuse(n: jinja2.nodes.Node, what: str) -> None:
        raise ContractError(f"{where}:{n.lineno}: {what} is not allowed in a contract template")

    for n in node.find_all(nodes.Node):
        if isinstance(n, nodes.Pow):
            refuse(n, "exponentiation (**)")
        elif isinstance(n, nodes.Getattr) and n.attr.startswith("_"):
            refuse(n, f"the attribute {n.attr!r}")
        elif isinstance(n, nodes.Getattr) and n.attr in _FORMAT_METHODS:
            refuse(n, f"str.{n.attr} (use the `format` filter or `~`)")
        elif (
            isinstance(n, nodes.Getitem)
            and isinstance(n.arg, nodes.Const)
            and isinstance(n.arg.value, str)
            and n.arg.value.startswith("_")
        ):
            refuse(n, f"the item {n.arg.value!r}")
        elif isinstance(n, nodes.Mul):
            for side in (n.left, n.right):
                if isinstance(side, nodes.Const) and isinstance(side.value, int):
                    if side.value > MAX_REPEAT:
                        refuse(n, f"a repetition by {side.value:,} (over {MAX_REPEAT:,})")
        elif isinstance(n, nodes.Call) and isinstance(n.node, nodes.Name):
            if n.node.name == "range":
                for arg in n.args:
                    if isinstance(arg, nodes.Const) and isinstance(arg.value, int):
                        if abs(arg.value) > MAX_RANGE:
                            refuse(n, f"range({arg.value:,}) (over {MAX_RANGE:,})")


class ContractEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with a faster `m.sender` on plain dicts (records are rendered as dicts).

    Same semantics as Jinja's lookup: a dict attribute (`items`, `keys`, ...) goes through the
    sandbox's checks; any other name is the item, as Jinja returns after its AttributeError.
    On top of Jinja's sandbox: `**` is refused, `*` and `range` are bounded, and `str.format`
    is unsafe (what `check_template_ast` refuses at load, enforced again at render).
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _bounded_range
        self.globals.pop("lipsum", None)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise SecurityError("exponentiation (**) is not allowed")
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and type(count) is int:
                if len(seq) * max(count, 0) > MAX_REPEAT:
                    raise SecurityError(
                        f"a repetition to {len(seq) * count:,} items (over {MAX_REPEAT:,})"
                    )
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _FORMAT_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if kind is jinja2.runtime.LoopContext and attribute in _LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


def make_environment(folder: Path) -> ImmutableSandboxedEnvironment:
    """Return the strict sandboxed environment for one contract folder."""
    return ContractEnvironment(
        loader=ContractLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=RENDERER_OPTIONS["trim_blocks"],
        lstrip_blocks=RENDERER_OPTIONS["lstrip_blocks"],
        keep_trailing_newline=RENDERER_OPTIONS["keep_trailing_newline"],
        newline_sequence="\n",
        auto_reload=False,
    )


_GLOBALS: weakref.WeakKeyDictionary[jinja2.Template, dict[str, Any]] = weakref.WeakKeyDictionary()


def _globals(template: jinja2.Template) -> dict[str, Any]:
    # template.globals is a ChainMap over the environment's; flattening it once per template
    # saves a ChainMap walk per render.
    try:
        return _GLOBALS[template]
    except KeyError:
        flat = _GLOBALS[template] = dict(template.globals)
        return flat


def _direct(template: jinja2.Template) -> DirectTemplate | None:
    # Compiled at the first render from the source the loader gave Jinja for this template,
    # and kept on the template object (a dict lookup per render, not a weak-key lookup).
    try:
        return template.jarvis_direct  # type: ignore[attr-defined,no-any-return]
    except AttributeError:
        pass
    env, direct = template.environment, None
    loader = env.loader
    if type(env) is ContractEnvironment and isinstance(loader, ContractLoader):
        if template.name is not None and not env.finalize and not env.autoescape:
            direct = compile_direct(env, template.name, loader.sources)
    template.jarvis_direct = direct  # type: ignore[attr-defined]
    return direct


def render_template(template: jinja2.Template, context: Mapping[str, Any], *, where: str) -> str:
    """Render one compiled template, converting Jinja errors to `ContractError`.

    Args:
        template: a template from `make_environment`.
        context: the variables; values are data and are never rendered again.
        where: the template's file name, used in error messages.

    Returns:
        The rendered text.

    Raises:
        ContractError: the template failed (undefined attribute, sandbox violation).
    """
    direct = _direct(template)
    if direct is not None and direct.useful:
        text = direct.try_render(context)
        if text is not None:
            return text
    _BUDGET.left = MAX_ITERATIONS
    try:
        # Template.render copies the globals into a fresh context on every call; merging them
        # into a shared one is the same context, a third cheaper (render-dataset's hot loop).
        shared = template.new_context({**_globals(template), **context}, shared=True)
        return concat(template.root_render_func(shared))
    except jinja2.TemplateError as exc:
        raise ContractError(f"{where}: {exc}") from exc
    except Exception as exc:
        # A template is code: whatever it raises (IndexError, OverflowError, MemoryError, a
        # recursive macro) is the contract's error, named by its file, never a traceback.
        raise ContractError(f"{where}: {type(exc).__name__}: {exc}") from exc


class SpecialTokenPolicy:
    """Refuses or escapes chat control strings in every string value of a record."""

    def __init__(self, mode: str, extra: Iterable[str] = ()) -> None:
        if mode not in ("refuse", "escape"):
            raise ContractError(f"special_tokens must be 'refuse' or 'escape', not {mode!r}")
        self.mode = mode
        tokens = sorted(set(CONTROL_STRINGS) | {t for t in extra if t}, key=lambda t: (-len(t), t))
        self.tokens = tuple(tokens)
        self._pattern = re.compile("|".join(re.escape(t) for t in self.tokens))
        # Fast path: most text has none of the first characters of any control string (a
        # substring test per character: a few of them, each a C scan of the text).
        firsts = sorted({t[0] for t in self.tokens})
        self._first_chars = tuple(firsts) if len(firsts) <= 8 else ()
        self._first_set = frozenset(firsts) if len(firsts) > 8 else None

    def with_tokens(self, extra: Iterable[str]) -> SpecialTokenPolicy:
        """Return a policy that also covers `extra` (e.g. a tokenizer's special tokens)."""
        return _policy(self.mode, tuple(sorted({*self.tokens, *extra})))

    def find(self, text: str) -> str | None:
        """Return the first control string found in `text`, or None."""
        if self._first_set is not None:
            if self._first_set.isdisjoint(text):
                return None
        else:
            for char in self._first_chars:
                if char in text:
                    break
            else:
                return None
        match = self._pattern.search(text)
        return match.group(0) if match else None

    def apply(self, value: Any, path: str = "") -> Any:
        """Check (or escape) every string inside `value`; return the value to render.

        Raises:
            SpecialTokenError: mode is "refuse" and a string holds a control string.
        """
        if isinstance(value, str):
            token = self.find(value)
            if token is None:
                return value
            if self.mode == "refuse":
                raise SpecialTokenError(
                    f"{path}: contains the chat control string {token!r}; "
                    "refused by the contract's special-token policy",
                    field=path,
                )
            return self._pattern.sub(lambda m: m.group(0)[0] + ESCAPE_MARK + m.group(0)[1:], value)
        if isinstance(value, list):
            return [self.apply(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.apply(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return value


@functools.lru_cache(maxsize=64)
def _policy(mode: str, tokens: tuple[str, ...]) -> SpecialTokenPolicy:
    # Cached: a tokenizer's special tokens compile into one regex, once per process.
    return SpecialTokenPolicy(mode, tokens)
