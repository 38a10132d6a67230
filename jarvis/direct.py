"""Direct rendering: the plain subset of a contract template as one Python function.

A prompt template mostly prints fields, loops over lists and tests flags. Jinja's sandbox
makes each of those a guarded call (an attribute lookup, a loop context, an undefined check)
that costs more than the text it produces, and render-dataset renders a template per record.
`compile_direct` turns the subset below into one function that does the same lookups on the
record's plain data (dicts, lists, strings, numbers, None) and nothing else: no call, no
filter, no attribute of an object, so nothing the sandbox guards can happen.

Anything else raises `Fallback` where it is met, and the caller renders through Jinja, which
gives the exact output or the exact error: a missing name or key (the strict undefined
error), a value that is not plain data, a comparison Python refuses, and every node outside
the subset (filters, tests, calls, `set`, macros, blocks, arithmetic). The subset:

- text, and `{{ x }}` of a string, number, bool or None (printed with `str`, as Jinja does);
- names, `a.b` and `a["b"]` on dicts (a dict method's name goes to Jinja), `a[0]` on lists;
- `{% if %}` / `elif` / `else` on plain values; `not`, `and`, `or`, `x if c else y`;
- comparisons (`==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`) of plain values, and `~`;
- `{% for x in list %}` with `else`, and `loop.index`, `index0`, `revindex`, `revindex0`,
  `first`, `last`, `length`;
- `{% include "literal" %}` outside loops (the included file's own subset, inlined).

The function is generated Python source, as Jinja's own compiler does for every template,
but nothing of the contract is in that source: names, keys and text are passed in a
constants tuple (`K[3]`), so the source is made only of this module's fragments and numbers.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import nodes

_NONE = type(None)
_SCALARS = frozenset({str, int, float, bool, _NONE})
_TRUTHY = _SCALARS | {list, tuple, dict}
_SEQUENCES = frozenset({list, tuple})
_INDEXABLE = frozenset({dict, list, tuple})
_CONTAINERS = frozenset({str, list, tuple, dict})
_DICT_ATTRIBUTES = frozenset(dir(dict))
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
# `loop.<attr>` in the loop at depth d, over the generated index i<d> and length n<d>.
_LOOP = {
    "index": "(i{d} + 1)",
    "index0": "i{d}",
    "revindex": "(n{d} - i{d})",
    "revindex0": "(n{d} - i{d} - 1)",
    "first": "(i{d} == 0)",
    "last": "(i{d} == n{d} - 1)",
    "length": "n{d}",
}
_BOOL_LOOP = frozenset({"first", "last"})
_POISON = -1  # a name whose meaning here is Jinja's to decide (in a loop's `else` block)
_MAX_DEPTH = 12  # nested blocks; Python refuses about 20 statically nested ones


class Fallback(Exception):  # noqa: N818 (a signal, not an error)
    """This render needs Jinja: a node outside the subset, or data that is not plain."""


def _fail() -> Any:
    raise Fallback


def _truth(value: Any) -> bool:
    if type(value) not in _TRUTHY:
        raise Fallback
    return bool(value)


def _text(value: Any) -> str:
    if type(value) not in _SCALARS:
        raise Fallback
    return str(value)


def _concat(*values: Any) -> str:
    return "".join([_text(v) for v in values])


def _compare(ops: tuple[str, ...], first: Any, *rest: Any) -> Any:
    # Python's chained comparison, on plain values only.
    left, result = first, True
    for op, right in zip(ops, rest, strict=True):
        kinds = _CONTAINERS if op in ("in", "notin") else _SCALARS
        if type(left) not in _SCALARS or type(right) not in kinds:
            raise Fallback
        result = _COMPARE[op](left, right)
        if not result:
            return result
        left = right
    return result


_NAMESPACE = {
    "F": _fail,
    "T": _truth,
    "S": _text,
    "J": _concat,
    "C": _compare,
    "Fallback": Fallback,
    "SEQ": _SEQUENCES,
    "IDX": _INDEXABLE,
    "enumerate": enumerate,
    "len": len,
    "type": type,
    "str": str,
    "dict": dict,
    "KeyError": KeyError,
    "IndexError": IndexError,
    "TypeError": TypeError,
}


class _Unsupported(Exception):  # noqa: N818
    """An expression outside the subset: its statement becomes `F()`."""


class _Generator:
    def __init__(self, env: jinja2.Environment, sources: Mapping[str, str]) -> None:
        self.env = env
        self.sources = sources
        self.including: list[str] = []
        self.lines: list[str] = []
        self.consts: list[Any] = []
        self.temps = 0
        self.depth = 0  # loops around the statement being generated
        self.direct = 0  # statements that are not F(): none means nothing is worth trying

    def const(self, value: Any) -> str:
        self.consts.append(value)
        return f"K[{len(self.consts) - 1}]"

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def emit(self, level: int, line: str) -> None:
        self.lines.append("    " * level + line)

    def template(self, name: str, level: int) -> None:
        source = self.sources.get(name)
        if source is None or name in self.including:
            self.emit(level, "F()")
            return
        self.including.append(name)
        try:
            self.body(self.env.parse(source, name=name).body, {}, level)
        finally:
            self.including.pop()

    def body(self, items: list[nodes.Node], scope: dict[str, int], level: int) -> None:
        start = len(self.lines)
        for node in items:
            self.stmt(node, scope, level)
        if len(self.lines) == start:
            self.emit(level, "pass")

    def stmt(self, node: nodes.Node, scope: dict[str, int], level: int) -> None:
        if level > _MAX_DEPTH:
            self.emit(level, "F()")
            return
        mark = len(self.lines)
        try:
            if isinstance(node, nodes.Output):
                self.output(node, scope, level)
            elif isinstance(node, nodes.If):
                self.if_(node, scope, level)
            elif isinstance(node, nodes.For):
                self.for_(node, scope, level)
            elif isinstance(node, nodes.Include):
                self.include(node, scope, level)
            else:
                raise _Unsupported
        except _Unsupported:
            del self.lines[mark:]
            self.emit(level, "F()")
            return
        self.direct += 1

    def output(self, node: nodes.Output, scope: dict[str, int], level: int) -> None:
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                self.emit(level, f"append({self.const(child.data)})")
            elif isinstance(child, nodes.Const) and type(child.value) in _SCALARS:
                self.emit(level, f"append({self.const(str(child.value))})")
            else:
                code, _ = self.expr(child, scope)
                self.emit(level, f"_v = {code}")
                self.emit(level, "append(_v if type(_v) is str else S(_v))")

    def if_(self, node: nodes.If, scope: dict[str, int], level: int) -> None:
        keyword = "if"
        for branch in [node, *node.elif_]:
            self.emit(level, f"{keyword} {self.test(branch.test, scope)}:")
            self.body(branch.body, scope, level + 1)
            keyword = "elif"
        if node.else_:
            self.emit(level, "else:")
            self.body(node.else_, scope, level + 1)

    def for_(self, node: nodes.For, scope: dict[str, int], level: int) -> None:
        target = node.target
        if (
            not isinstance(target, nodes.Name)
            or target.name == "loop"
            or node.test is not None
            or node.recursive
        ):
            raise _Unsupported
        d = self.depth
        items, _ = self.expr(node.iter, scope)
        self.emit(level, f"_s{d} = {items}")
        self.emit(level, f"if type(_s{d}) not in SEQ:")
        self.emit(level + 1, "F()")
        self.emit(level, f"if _s{d}:")
        self.emit(level + 1, f"n{d} = len(_s{d})")
        self.emit(level + 1, f"for i{d}, x{d} in enumerate(_s{d}):")
        self.depth += 1
        try:
            self.body(node.body, {**scope, target.name: d, "loop": d}, level + 2)
        finally:
            self.depth -= 1
        if node.else_:
            self.emit(level, "else:")
            self.body(node.else_, {**scope, target.name: _POISON, "loop": _POISON}, level + 1)

    def include(self, node: nodes.Include, scope: dict[str, int], level: int) -> None:
        # Outside loops the included template sees exactly this context; inside one, Jinja
        # adds the loop's locals to it, which is Jinja's to do.
        ref = node.template
        if (
            scope
            or not node.with_context
            or node.ignore_missing
            or not isinstance(ref, nodes.Const)
            or type(ref.value) is not str
        ):
            raise _Unsupported
        try:  # Jinja loads (and caches) it now, so both renders use the same source
            self.env.get_template(ref.value)
        except jinja2.TemplateError:
            raise _Unsupported from None
        self.template(ref.value, level)

    def test(self, node: nodes.Node, scope: dict[str, int]) -> str:
        code, is_bool = self.expr(node, scope)
        return code if is_bool else f"T({code})"

    def expr(self, node: nodes.Node, scope: dict[str, int]) -> tuple[str, bool]:  # noqa: C901
        """Python source for an expression, and whether it is always a bool."""
        if isinstance(node, nodes.Const):
            if type(node.value) not in _SCALARS:
                raise _Unsupported
            return self.const(node.value), False
        if isinstance(node, nodes.Name):
            if node.name in scope:
                depth = scope[node.name]
                if depth == _POISON or node.name == "loop":  # a bare `loop` is a LoopContext
                    raise _Unsupported
                return f"x{depth}", False
            return f"ctx[{self.const(node.name)}]", False  # KeyError: undefined, or a global
        if isinstance(node, nodes.Getattr):
            inner = node.node
            if isinstance(inner, nodes.Name) and inner.name == "loop" and "loop" in scope:
                depth = scope["loop"]
                if depth == _POISON or node.attr not in _LOOP:
                    raise _Unsupported
                return _LOOP[node.attr].format(d=depth), node.attr in _BOOL_LOOP
            if node.attr in _DICT_ATTRIBUTES:  # `d.items` is the method: the sandbox decides
                raise _Unsupported
            return self.item(inner, node.attr, scope, "is dict")
        if isinstance(node, nodes.Getitem):
            arg = node.arg
            if isinstance(arg, nodes.Neg) and isinstance(arg.node, nodes.Const):
                if type(arg.node.value) is int:  # `xs[-1]`
                    arg = nodes.Const(-arg.node.value)
            if not isinstance(arg, nodes.Const) or type(arg.value) not in (str, int):
                raise _Unsupported
            kinds = "is dict" if type(arg.value) is str else "in IDX"
            return self.item(node.node, arg.value, scope, kinds)
        if isinstance(node, nodes.Not):
            return f"(not {self.test(node.node, scope)})", True
        if isinstance(node, nodes.And | nodes.Or):
            left, _ = self.expr(node.left, scope)
            right, _ = self.expr(node.right, scope)
            t = self.temp()
            if isinstance(node, nodes.And):
                return f"({right} if T({t} := {left}) else {t})", False
            return f"({t} if T({t} := {left}) else {right})", False
        if isinstance(node, nodes.CondExpr):
            if node.expr2 is None:  # Jinja's undefined for the missing branch
                raise _Unsupported
            test = self.test(node.test, scope)
            yes, _ = self.expr(node.expr1, scope)
            no, _ = self.expr(node.expr2, scope)
            return f"({yes} if {test} else {no})", False
        if isinstance(node, nodes.Compare):
            if any(o.op not in _COMPARE for o in node.ops):
                raise _Unsupported
            ops = self.const(tuple(o.op for o in node.ops))
            values = [self.expr(n, scope)[0] for n in (node.expr, *(o.expr for o in node.ops))]
            return f"C({ops}, {', '.join(values)})", len(node.ops) == 1
        if isinstance(node, nodes.Concat):
            return f"J({', '.join(self.expr(n, scope)[0] for n in node.nodes)})", False
        raise _Unsupported

    def item(
        self, node: nodes.Node, key: Any, scope: dict[str, int], kinds: str
    ) -> tuple[str, bool]:
        # `obj[key]` when obj's type fits (KeyError, IndexError: Jinja's undefined), else F().
        inner, _ = self.expr(node, scope)
        t = self.temp()
        return f"({t}[{self.const(key)}] if type({t} := {inner}) {kinds} else F())", False


class DirectTemplate:
    """One template's subset as a function; `render` raises `Fallback` outside it."""

    def __init__(self, function: Callable[[Mapping[str, Any], list[str]], None]) -> None:
        self._function = function
        self.renders = 0
        self.fallbacks = 0
        # False once most renders have needed Jinja anyway (trying first is then waste).
        self.useful = True

    def try_render(self, context: Mapping[str, Any]) -> str | None:
        """`render`, or None where the render needs Jinja (counted)."""
        self.renders += 1
        out: list[str] = []
        try:
            self._function(context, out)
        except Exception:  # Fallback, or anything odd: Jinja gives the output or the error
            self.fallbacks += 1
            if self.renders >= 256 and self.fallbacks * 2 >= self.renders:
                self.useful = False
            return None
        return "".join(out)

    def render(self, context: Mapping[str, Any]) -> str:
        """The template's output for `context`, exactly as Jinja renders it.

        Raises:
            Fallback: the render needs Jinja.
        """
        out: list[str] = []
        self._function(context, out)
        return "".join(out)


def compile_direct(
    env: jinja2.Environment, name: str, sources: Mapping[str, str]
) -> DirectTemplate | None:
    """Compile template `name` from the exact `sources` Jinja compiled, or None when no
    statement of it is in the subset (every render would fall back).

    Args:
        env: the environment the template was loaded by (its parser and whitespace options).
        name: the template's name in `sources`.
        sources: template name -> source text, as the environment's loader returned them.
    """
    gen = _Generator(env, sources)
    try:
        gen.template(name, 2)
        if not gen.direct:
            return None
        source = "\n".join(
            [
                "def render(ctx, out):",
                "    append = out.append",
                "    try:",
                *gen.lines,
                "    except (KeyError, IndexError, TypeError):",
                "        raise Fallback from None",
            ]
        )
        namespace: dict[str, Any] = {**_NAMESPACE, "K": tuple(gen.consts), "__builtins__": {}}
        exec(compile(source, f"<direct {name}>", "exec"), namespace)  # noqa: S102 (see above)
    except (jinja2.TemplateError, RecursionError, SyntaxError, MemoryError):
        return None
    return DirectTemplate(namespace["render"])
