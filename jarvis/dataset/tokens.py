"""Token counts for many rows at once, exactly as mlx-lm would compute them one by one.

Shortcuts, each proven for the tokenizer at hand before it is used, else not taken:

- `ChatSkeleton`: the chat template's text around each message's content, found by rendering
  the template once with marker contents. It stands in for a render per row only when the
  template treats content as opaque text: a traced render shows no test, method, length or
  comparison on any content, and the markers (quotes, backslash, `<`, `&`, newlines, edge
  spaces, both cases) come out verbatim, so no filter touched them. Control flow then
  depends only on the roles and flags, the same for every row of one role sequence.
- `SegmentEncoder`: the fast tokenizer splits text at its added tokens before normalizing
  and pre-tokenizing, so a text's ids are the concatenation of its pieces' ids. Pieces
  repeat (the system prompt, the role headers, the user turn shared by the prompt and the
  row), so each distinct piece is encoded once, in one Rust batch. Used only when no added
  token strips or absorbs its neighbours (`lstrip`, `rstrip`, `single_word`). ASCII and
  Latin pieces go word by word through `words.Words` where it is proven for the tokenizer.
- `CompiledChatTemplate`: a template that reads content (no skeleton) renders each row
  through its compiled template directly, proven equal to `apply_chat_template` on probes.

`RowRenderer.tokens_many` also compares its first rows with the one-by-one path and falls
back for good on any difference.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from types import BuiltinMethodType, MethodType
from typing import Any

# Every transform a template might apply to content (trim, case, escaping, JSON) changes one
# of these characters, so a marker that survives verbatim was output as it is.
_MARK = " \n\"'\\<&>%%{}Jx%d\t "
_CACHE_LIMIT = 1 << 16  # distinct pieces kept between batches (the hot ones come back at once)


class _Traced(str):
    """A content string that records every operation a template performs on it."""

    __slots__ = ()
    touched: list[str] = []

    def __str__(self) -> str:  # output: fine
        return str.__str__(self)

    def __add__(self, other: str) -> _Traced:  # concatenation keeps tracing
        return _Traced(str.__add__(str.__str__(self), other))

    def __radd__(self, other: str) -> _Traced:
        return _Traced(str.__add__(other, str.__str__(self)))


def _traced_method(name: str) -> Callable[..., Any]:
    method = getattr(str, name)

    def call(self: str, *args: Any, **kwargs: Any) -> Any:
        _Traced.touched.append(name)
        return method(str.__str__(self), *args, **kwargs)

    return call


_UNTRACED = {"__str__", "__add__", "__radd__", "__new__", "__init__", "__getattribute__",
             "__setattr__", "__delattr__", "__class__", "__init_subclass__", "__subclasshook__",
             "__reduce__", "__reduce_ex__", "__getnewargs__", "__sizeof__", "__dir__",
             "__doc__", "__getstate__"}  # fmt: skip
for _name in dir(str):
    if _name not in _UNTRACED and callable(getattr(str, _name)):
        setattr(_Traced, _name, _traced_method(_name))


def _traced_bool(self: str) -> bool:
    _Traced.touched.append("__bool__")
    return bool(str.__len__(self))


_Traced.__bool__ = _traced_bool  # type: ignore[attr-defined]


class ChatSkeleton:
    """The template's text around the contents of one role sequence."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def render(self, contents: Sequence[str]) -> str:
        """The template's output for messages with these contents."""
        out = [self.pieces[0]]
        for content, piece in zip(contents, self.pieces[1:], strict=True):
            out += (content, piece)
        return "".join(out)

    @classmethod
    def probe(
        cls, tokenizer: Any, roles: tuple[str, ...], *, generation: bool, thinking: bool
    ) -> ChatSkeleton | None:
        """The skeleton for `roles`, or None when the template's output depends on content."""
        from jarvis.chat import apply_chat_template

        marks = [_MARK % i for i in range(len(roles))]
        messages = [{"role": r, "content": m} for r, m in zip(roles, marks, strict=True)]
        try:
            text = str(
                apply_chat_template(
                    tokenizer, messages, add_generation_prompt=generation, enable_thinking=thinking
                )
            )
            traced = _traced_render(tokenizer, messages, generation, thinking)
        except Exception:  # any failure here only means: no shortcut
            return None
        if traced != text:
            return None
        pieces, rest = [], text
        for mark in marks:
            if rest.count(mark) != 1:
                return None
            head, rest = rest.split(mark)
            pieces.append(head)
        pieces.append(rest)
        skeleton = cls(pieces)
        # A second probe with other contents (empty, reasoning markers) must agree too.
        for other in ("", "</think>a", "<think>\n"):
            check = [{"role": r, "content": other} for r in roles]
            want = apply_chat_template(
                tokenizer, check, add_generation_prompt=generation, enable_thinking=thinking
            )
            if skeleton.render([other] * len(roles)) != str(want):
                return None
        return skeleton


def _traced_render(
    tokenizer: Any, messages: list[dict[str, str]], generation: bool, thinking: bool
) -> str | None:
    """Render through transformers' own compiled template with traced contents; None if the
    template touched any content (or transformers has no such internals)."""
    traced = [{"role": m["role"], "content": _Traced(m["content"])} for m in messages]
    _Traced.touched = []
    text = CompiledChatTemplate.of(tokenizer, thinking, fast=False).render(traced, generation)
    return None if _Traced.touched else text


class CompiledChatTemplate:
    """The tokenizer's compiled chat template, rendered without `apply_chat_template`'s
    per-call conversions (normalizing, copying and aliasing the messages and arguments:
    half of a render's time), which leave plain `{"role", "content"}` strings as they are.

    For templates without a skeleton (they read content), proven equal to
    `apply_chat_template` on probe conversations before it is used (`probe`).
    """

    def __init__(self, template: Any, kwargs: dict[str, Any]) -> None:
        self.template = template
        self.kwargs = kwargs
        # `Template.render`'s context starts from its globals, a ChainMap it copies key by
        # key on each call: copied once here (Qwen3 on NUS SMS's short rows: 0.92x, A/B).
        self.globals = dict(template.globals)

    def render(self, messages: list[dict[str, str]], generation: bool) -> str:
        """The template's text for `messages`, as `apply_chat_template` renders it: what
        `Template.render` does, from the copied globals (a shared context: used as given)."""
        template = self.template
        context = dict(self.globals)
        context.update(
            messages=messages, tools=None, documents=None, add_generation_prompt=generation,
            **self.kwargs,
        )  # fmt: skip
        ctx = template.new_context(context, shared=True)
        try:
            return str(template.environment.concat(template.root_render_func(ctx)))
        except Exception:  # noqa: BLE001 - jinja's own handling: its error, with the template's line
            template.environment.handle_exception()
            raise  # not reached: handle_exception raises

    @classmethod
    def of(cls, tokenizer: Any, thinking: bool, *, fast: bool) -> CompiledChatTemplate:
        """Transformers' compiled template for `tokenizer` with the arguments it passes
        (special tokens, `enable_thinking`); `fast`: in `_fast_sandbox`, compiled again."""
        from transformers.utils.chat_template_utils import (
            _compile_jinja_template,
            _plain_template_data,
        )

        source = tokenizer.get_chat_template()
        template = _compile_jinja_template(source)
        kwargs = _plain_template_data({**tokenizer.special_tokens_map, "enable_thinking": thinking})
        return cls(_fast_sandbox(template, source) if fast else template, kwargs)

    @classmethod
    def probe(cls, tokenizer: Any, thinking: bool) -> CompiledChatTemplate | None:
        """The fast render for `tokenizer`, or None where it differs on a probe."""
        from jarvis.chat import apply_chat_template

        try:
            compiled = cls.of(tokenizer, thinking, fast=True)
            for roles, contents in _CONVERSATIONS:
                messages = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]
                for generation in (False, True):
                    want = apply_chat_template(
                        tokenizer, messages, add_generation_prompt=generation,
                        enable_thinking=thinking,
                    )  # fmt: skip
                    if compiled.render(messages, generation) != str(want):
                        return None
        except Exception:  # any failure here only means: no shortcut
            return None
        return compiled


_FORMATS = ("format", "format_map")  # a string's methods the sandbox wraps when read


def _fast_sandbox(template: Any, source: str) -> Any:
    """`template` compiled again in an overlay of its environment with exact shortcuts in
    jinja's immutable sandbox, where a template that reads every message spends half its
    render:

    - the check of an attribute is looked up once per (type, name): it is a function of
      those two alone (type tests against ABCs, and the name);
    - `message.content` on a plain dict, whose instances can have no attribute of a name
      `dict` lacks, reads the item at once instead of failing `getattr` first (a missing
      one is undefined at once);
    - a method of a string or a plain dict that the check allows (`content.split`,
      `message.get`; not `format`, which the sandbox wraps, nor `pop`) is read at once;
      another object's public attribute (`loop.index0`, `ns.flag`) goes through the
      sandbox's own steps inline, with the cached check;
    - a call of a string's or a dict's built-in method goes straight to it: the sandbox's
      checks (`unsafe_callable`, `alters_data`) and the context's (`jinja_pass_arg`) look
      for attributes no built-in method has.

    Any other environment keeps its own checks.
    """
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = template.environment
    cls = type(env)
    if (
        cls.is_safe_attribute is not ImmutableSandboxedEnvironment.is_safe_attribute
        or cls.getattr is not ImmutableSandboxedEnvironment.getattr
        or cls.call is not ImmutableSandboxedEnvironment.call
        or cls.is_safe_callable is not ImmutableSandboxedEnvironment.is_safe_callable
    ):
        return template
    overlay = env.overlay()
    check, plain_getattr, plain_call = overlay.is_safe_attribute, overlay.getattr, overlay.call
    undefined = overlay.undefined
    known: dict[tuple[type, str], bool] = {}
    dict_names = frozenset(dir(dict))
    # The methods the check allows, asked of it once (it depends on the type and the name).
    str_methods, dict_methods = (
        frozenset(
            name
            for name in dir(kind)
            if check(kind(), name, getattr(kind(), name)) and name not in _FORMATS
        )
        for kind in (str, dict)
    )

    def is_safe_attribute(obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        safe = known.get(key)
        if safe is None:
            safe = known[key] = check(obj, attr, value)
        return safe

    def getattr_(obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict:
            if attribute not in dict_names:
                # The item, or jinja's undefined for a missing one (`message.tool_calls`).
                return obj[attribute] if attribute in obj else undefined(obj=obj, name=attribute)
            if attribute in dict_methods:
                return getattr(obj, attribute)
        elif kind is str:
            if attribute in str_methods:
                return getattr(obj, attribute)
        elif attribute[:1] != "_":  # `loop.index0`, `ns.multi_step_tool`: the sandbox's steps
            try:
                value = getattr(obj, attribute)
            except AttributeError:
                pass
            else:  # safe, and not a `format` method the sandbox would wrap
                if is_safe_attribute(obj, attribute, value) and not (
                    type(value) in (MethodType, BuiltinMethodType) and value.__name__ in _FORMATS
                ):
                    return value
        return plain_getattr(obj, attribute)  # what is left: the same path as before

    def call(context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if type(obj) is BuiltinMethodType and type(obj.__self__) in (str, dict):
            # What the compiler passes inside loops and blocks, for context functions only.
            # (The context turns a StopIteration into undefined; no such method raises one.)
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            return obj(*args, **kwargs)
        return plain_call(context, obj, *args, **kwargs)

    overlay.is_safe_attribute = is_safe_attribute
    overlay.getattr = getattr_
    overlay.call = call
    return overlay.from_string(source)


# Conversations of every role sequence a contract renders, with contents a template may
# read: empty, reasoning markers, edge spaces, newlines, quotes.
_CONVERSATIONS = [
    (("system", "user", "assistant"), ("S", " u\n'x' ", "<think>\nr\n</think>\n\na")),
    (("system", "user"), ("", "</think>u")),
    (("user", "assistant"), ("u ", " a")),
    (("user",), ("<tool_response>u\n",)),
]


def _trie(tokens: list[str]) -> str:
    """A regex matching the longest of `tokens` (sorted, non-empty) at a position; a run
    that all of a branch's tokens share is one literal, so nesting follows branch points."""
    heads: dict[str, list[str]] = {}
    for token in tokens:
        heads.setdefault(token[0], []).append(token[1:])
    branches = []
    for head, tails in heads.items():
        rest = [t for t in tails if t]
        if not rest:
            branches.append(re.escape(head))
        elif len(rest) == 1 and "" not in tails:  # one token left: a literal
            branches.append(re.escape(head + rest[0]))
        elif "" in tails:  # a longer token first; the greedy `?` ends here only when none follows
            branches.append(f"{re.escape(head)}(?:{_trie(rest)})?")
        else:
            shared = os.path.commonprefix(rest)
            shared = shared[:-1] if shared in rest else shared  # a token ending there stays
            inner = _trie([t[len(shared) :] for t in rest])
            branches.append(f"{re.escape(head + shared)}(?:{inner})")
    return "|".join(branches)


class SegmentEncoder:
    """Encode texts through a fast tokenizer piece by piece between added tokens, each
    distinct piece once."""

    def __init__(self, fast: Any, added: dict[str, int]) -> None:
        self.added = added
        # As a trie: at one position the regex takes the longest token, as tokenizers does,
        # and tries one branch per character (Llama 3's 256 tokens share their first two).
        self.split = re.compile(f"({_trie(sorted(added))})").split
        self.cache: dict[str, list[int]] = {}
        self.batch = getattr(fast, "encode_batch_fast", None) or fast.encode_batch
        from jarvis.dataset.words import Words

        self.words = Words.for_tokenizer(fast)  # ASCII and Latin pieces, word by word

    @classmethod
    def for_tokenizer(cls, fast: Any) -> SegmentEncoder | None:
        """The encoder, or None when an added token could strip or merge across a split."""
        try:
            decoder = fast.get_added_tokens_decoder()
        except AttributeError:
            return None
        added: dict[str, int] = {}
        for token_id, token in decoder.items():
            if token.lstrip or token.rstrip or token.single_word:
                return None
            if not token.normalized and token.content:
                added[str(token.content)] = int(token_id)
        return cls(fast, added) if added else None

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids, as `encode(text, add_special_tokens=False)` gives them."""
        pieces = [self.split(t) for t in texts]
        cache = self.cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        missing = {seg: None for parts in pieces for seg in parts[::2] if seg and seg not in cache}
        if missing:
            todo = list(missing)
            if self.words is not None:
                words = self.words
                rust = []
                for seg in todo:
                    if words.takes(seg):
                        cache[seg] = words.encode(seg)
                    else:
                        rust.append(seg)
                todo = rust
            if todo:
                for seg, enc in zip(todo, self.batch(todo, add_special_tokens=False), strict=True):
                    cache[seg] = enc.ids
        added = self.added
        out: list[list[int]] = []
        for parts in pieces:
            ids: list[int] = []
            for i, part in enumerate(parts):
                if i & 1:
                    ids.append(added[part])
                elif part:
                    ids += cache[part]
            out.append(ids)
        return out
