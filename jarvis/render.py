"""The one render path: a strict, sandboxed Jinja environment and the special-token policy.

Training rows and runtime prompts are both produced here, so they cannot drift.
"""

from __future__ import annotations

import functools
import os
import re
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import concat

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

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        pieces = jinja2.loaders.split_template_path(template)
        path = self.folder.joinpath(*pieces).resolve()
        if not path.is_relative_to(self.folder):
            raise jinja2.TemplateNotFound(f"{template} (outside {self.folder})")
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        source = path.read_bytes().decode("utf-8")
        mtime = path.stat().st_mtime
        return source, os.fspath(path), lambda: path.stat().st_mtime == mtime


_DICT_ATTRIBUTES = frozenset(dir(dict))
# LoopContext's public, read-only attributes: the sandbox allows every one of them anyway.
_LOOP_ATTRIBUTES = frozenset(
    ("index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
     "previtem", "nextitem")
)  # fmt: skip


class ContractEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with a faster `m.sender` on plain dicts (records are rendered as dicts).

    Same semantics as Jinja's lookup: a dict attribute (`items`, `keys`, ...) goes through the
    sandbox's checks; any other name is the item, as Jinja returns after its AttributeError.
    """

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
    try:
        # Template.render copies the globals into a fresh context on every call; merging them
        # into a shared one is the same context, a third cheaper (render-dataset's hot loop).
        shared = template.new_context({**_globals(template), **context}, shared=True)
        return concat(template.root_render_func(shared))
    except jinja2.TemplateError as exc:
        raise ContractError(f"{where}: {exc}") from exc


class SpecialTokenPolicy:
    """Refuses or escapes chat control strings in every string value of a record."""

    def __init__(self, mode: str, extra: Iterable[str] = ()) -> None:
        if mode not in ("refuse", "escape"):
            raise ContractError(f"special_tokens must be 'refuse' or 'escape', not {mode!r}")
        self.mode = mode
        tokens = sorted(set(CONTROL_STRINGS) | {t for t in extra if t}, key=lambda t: (-len(t), t))
        self.tokens = tuple(tokens)
        self._pattern = re.compile("|".join(re.escape(t) for t in self.tokens))
        # Fast path: most text has none of the first characters of any control string.
        self._first_chars = frozenset(t[0] for t in self.tokens)

    def with_tokens(self, extra: Iterable[str]) -> SpecialTokenPolicy:
        """Return a policy that also covers `extra` (e.g. a tokenizer's special tokens)."""
        return _policy(self.mode, tuple(sorted({*self.tokens, *extra})))

    def find(self, text: str) -> str | None:
        """Return the first control string found in `text`, or None."""
        if self._first_chars.isdisjoint(text):
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
