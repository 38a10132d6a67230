"""The direct renderer gives Jinja's output, or Jinja's own error, for every template and
record: the subset runs as one function, everything else falls back to the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jarvis.contract import load_contract
from jarvis.direct import DirectTemplate, Fallback, _Generator, compile_direct
from jarvis.errors import ContractError
from jarvis.render import make_environment, render_template

# Each in the subset, partly in it, or outside it (the fallback must then give Jinja's).
TEMPLATES = [
    "plain text only",
    "{{ a }}|{{ b }}|{{ n }}|{{ f }}|{{ flag }}|{{ none }}",
    "{% for m in xs %}{{ m.s }}: {{ m.t }}{% if not loop.last %}\n{% endif %}{% endfor %}",
    "{% for m in xs %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ loop.revindex }}"
    " {{ loop.revindex0 }} {{ loop.first }} {{ loop.last }};{% else %}empty{% endfor %}",
    "{% for m in xs %}{% for y in ys %}{{ loop.index }}{{ m.s }}{{ y }}{% endfor %}"
    "{{ loop.index }}{% endfor %}",
    "{% for a in xs %}{{ a.s }}{% endfor %}{{ a }}",  # the loop name ends with the loop
    "{% if a %}A{% elif b %}B{% elif n %}N{% else %}none{% endif %}",
    "{{ a if flag else b }} {{ a and b }} {{ a or n }} {{ not none }}",
    "{{ a == b }} {{ n < f }} {{ a ~ n ~ none }} {{ 1 < n < 5 }} {{ a in b }} {{ 'x' not in a }}",
    "{{ d.k }} {{ d['k'] }} {{ d['items'] }} {{ ys[0] }} {{ ys[-1] }} {{ xs[1].s }}",
    "{% for m in xs %}x{% else %}{{ loop }}{{ m }}{% endfor %}",  # else: Jinja's
    "{% if xs %}{{ xs[0].s }}{% endif %}{% if d %}{{ d.k }}{% endif %}{{ ys[5] }}",
    "{{ d.items }} {{ d.missing }}",  # a dict method, a missing key: Jinja's
    "{{ xs }} {{ d }}",  # not plain text: Jinja prints them
    "{{ a | upper }} {{ a | length }} {{ n + 1 }}",  # filters, arithmetic
    "{% set z = a %}{{ z }}",
    "{% for m in xs %}{% include 'inc.j2' %}{% endfor %}",  # include in a loop: Jinja's
    "{% include 'inc.j2' %}|{{ a }}",
    "{{ loop }}",  # a context name here, not a loop
    "{% for m in xs if m.s %}{{ m.s }}{% endfor %}",
    "{{ a > n }}",  # str against int: Python refuses, Jinja says how
    "{{ undefined_name }}",
    "{% for c in a %}{{ c }}{% endfor %}",  # a string is not a list here
    "{{ range(3) | list }} {{ ys | join(',') }}",
]
INCLUDE = "[{{ a }}{% if m is defined %}{{ m.s }}{% endif %}]"

text = st.text(alphabet="ab\n<'\"{}%", max_size=4)
plain = st.one_of(
    text, st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, width=32)
)
# Mostly the shapes a template expects (the direct path runs), sometimes not (Jinja's then).
message = st.fixed_dictionaries({"s": text, "t": text | plain}) | st.dictionaries(
    st.sampled_from(["s", "t", "items"]), plain, max_size=2
)
_VALUES = {
    "a": text | plain | st.lists(plain, max_size=2),
    "b": text | plain,
    "n": st.integers(-3, 3) | plain,
    "f": st.floats(-3, 3, width=32) | plain,
    "flag": st.booleans() | plain,
    "none": plain,
    "xs": st.lists(message, max_size=3) | st.lists(message, max_size=3) | plain,
    "ys": st.lists(text, max_size=3) | st.tuples(plain, plain) | plain,
    "d": st.dictionaries(st.sampled_from(["k", "items", "z"]), plain, max_size=3) | plain,
}
# Mostly every name present (the direct path runs), sometimes some missing (undefined).
contexts = (
    st.fixed_dictionaries(_VALUES)
    | st.fixed_dictionaries(_VALUES)
    | st.fixed_dictionaries({}, optional={**_VALUES, "loop": plain})
)
# A context under which each of the first templates runs directly to the end.
FULL = {
    "a": "x",
    "b": "xyz",
    "n": 2,
    "f": 2.5,
    "flag": True,
    "none": None,
    "xs": [{"s": "S", "t": 1}, {"s": "T", "t": None}],
    "ys": ["p", "q"],
    "d": {"k": "v", "items": "i"},
}
DIRECT = 11  # TEMPLATES[:DIRECT] run directly under FULL


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[jinja2.Environment, ...]:
    folder = tmp_path_factory.mktemp("direct")
    for i, text in enumerate(TEMPLATES):
        (folder / f"t{i}.j2").write_text(text)
    (folder / "inc.j2").write_text(INCLUDE)
    return make_environment(folder), make_environment(folder)


def _outcome(template: jinja2.Template, context: dict[str, Any]) -> str:
    try:
        return "ok: " + render_template(template, context, where="t")
    except ContractError as exc:
        return f"error: {exc}"


def _direct(env: jinja2.Environment, name: str) -> DirectTemplate | None:
    env.get_template(name)  # the loader keeps the source Jinja compiled
    return compile_direct(env, name, env.loader.sources)  # type: ignore[union-attr,attr-defined]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(TEMPLATES) - 1), context=contexts)
def test_output_and_errors_are_jinjas(
    pair: tuple[jinja2.Environment, jinja2.Environment], index: int, context: dict[str, Any]
) -> None:
    direct_env, jinja_env = pair
    name = f"t{index}.j2"
    slow = jinja_env.get_template(name)
    slow.jarvis_direct = None  # type: ignore[attr-defined]  # the sandbox alone
    want = _outcome(slow, context)
    direct = _direct(direct_env, name)
    if direct is not None:
        try:
            assert "ok: " + direct.render(context) == want
        except Fallback:
            pass
    # Through render_template: direct first, Jinja after a fallback.
    assert _outcome(direct_env.get_template(name), context) == want


def test_the_subset_runs_directly(pair: tuple[jinja2.Environment, jinja2.Environment]) -> None:
    direct_env, jinja_env = pair
    for index in range(DIRECT):
        name = f"t{index}.j2"
        slow = jinja_env.get_template(name)
        slow.jarvis_direct = None  # type: ignore[attr-defined]
        direct = _direct(direct_env, name)
        assert direct is not None, TEMPLATES[index]
        assert direct.render(FULL) == render_template(slow, FULL, where="t"), TEMPLATES[index]
    for index in range(DIRECT, len(TEMPLATES)):  # each of the others needs Jinja
        direct = _direct(direct_env, f"t{index}.j2")
        if direct is not None:
            with pytest.raises(Fallback):
                direct.render(FULL)


def test_the_bundled_templates_run_directly_and_match() -> None:
    for ref in ("reply@1", "reply@2", "codegen@1"):
        contract = load_contract(ref)
        for template in contract._templates.values():
            direct = _direct(template.environment, str(template.name))
            assert isinstance(direct, DirectTemplate), (ref, template.name)
    contract = load_contract("reply@1")
    user = contract._templates["user"]
    record = {
        "messages": [{"sender": "Sam", "text": "ya omw"}, {"sender": "Mom", "text": "ok"}],
        "retrieved": [{"message": "hi", "reply": "yo"}],
        **contract.spec.parameters,
    }
    direct = _direct(user.environment, str(user.name))
    assert direct is not None
    user.jarvis_direct = None  # type: ignore[attr-defined]
    try:
        want = render_template(user, record, where="u")
    finally:
        del user.jarvis_direct  # type: ignore[attr-defined]
    assert direct.render(record) == want
    assert want.startswith("Your past replies to similar messages:\nthem: hi\nyou: yo\n")
    assert want.endswith("Conversation:\nSam: ya omw\nMom: ok")
    with pytest.raises(Fallback):  # a message that is not a dict: Jinja's to word
        direct.render({**record, "messages": ["x"]})


def test_render_dataset_renders_without_falling_back(tmp_path: Path) -> None:
    contract = load_contract("reply@1")
    user = contract._templates["user"]
    record = contract.validate({"messages": [{"sender": "Sam", "text": "hi"}], "reply": "yo"})
    contract.messages(record, with_target=True)
    direct = user.jarvis_direct  # type: ignore[attr-defined]
    assert isinstance(direct, DirectTemplate)
    before = direct.renders, direct.fallbacks
    for _ in range(3):
        contract.messages(record, with_target=True)
    assert (direct.renders - before[0], direct.fallbacks - before[1]) == (3, 0)


def test_no_contract_text_reaches_the_generated_source(tmp_path: Path) -> None:
    hostile = "\"); __import__('os').system('x') #"
    key = hostile.replace("'", "\\'")
    (tmp_path / "h.j2").write_text(
        hostile + "{{ d['" + key + "'] }}{% for m in xs %}{{ m.evil_name }}{% endfor %}"
    )
    env = make_environment(tmp_path)
    env.get_template("h.j2")
    gen = _Generator(env, env.loader.sources)  # type: ignore[union-attr,attr-defined]
    gen.template("h.j2", 2)
    source = "\n".join(gen.lines)
    assert "os" not in source and "evil_name" not in source and "import" not in source
    assert hostile in gen.consts and "evil_name" in gen.consts
    direct = compile_direct(env, "h.j2", env.loader.sources)  # type: ignore[union-attr,attr-defined]
    assert direct is not None
    context = {"d": {hostile: 1}, "xs": [{"evil_name": "e"}]}
    assert direct.render(context) == hostile + "1e"


def test_a_template_outside_the_subset_is_left_to_jinja(tmp_path: Path) -> None:
    (tmp_path / "f.j2").write_text("{{ a | upper }}{% set b = 1 %}")
    env = make_environment(tmp_path)
    template = env.get_template("f.j2")
    assert compile_direct(env, "f.j2", env.loader.sources) is None  # type: ignore[union-attr,attr-defined]
    assert render_template(template, {"a": "x"}, where="f") == "X"
