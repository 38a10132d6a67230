"""Output checks on real-looking replies and code answers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jarvis.checks import run_checks
from jarvis.contract import load_contract

GOOD = '''### Solution
```python
def area(w, h):
    """Return the area of a rectangle.

    Args:
        w: width.
        h: height.

    Returns:
        w times h.
    """
    return w * h
```
### Usage
```python
print(area(2, 3))
```
### Sanity test
```python
assert area(2, 3) == 6
```'''


def test_codegen_checks_pass_on_the_perfect_format() -> None:
    results = run_checks(GOOD, load_contract("codegen@1").spec.checks)
    assert [(r.name, r.passed) for r in results] == [
        ("sections", True),
        ("python_parses", True),
        ("docstring_sections", True),
    ]


def test_codegen_checks_name_what_is_missing() -> None:
    plain = "```python\ndef area(w, h):\n    return w * h\n```"
    results = {r.name: r for r in run_checks(plain, load_contract("codegen@1").spec.checks)}
    assert results["sections"].detail == "missing '### Solution', '### Usage', '### Sanity test'"
    assert results["python_parses"].passed
    assert not results["docstring_sections"].passed
    broken = GOOD.replace("return w * h", "return w *")
    results = {r.name: r for r in run_checks(broken, load_contract("codegen@1").spec.checks)}
    assert results["python_parses"].detail.startswith("code block 1: invalid syntax")


def test_reply_checks() -> None:
    checks = load_contract("reply@1").spec.checks
    assert all(r.passed for r in run_checks("yea omw", checks))
    results = run_checks(" ".join(["word"] * 41), checks)
    assert results[1].to_dict() == {
        "name": "max_words",
        "passed": False,
        "detail": "41 words (limit 40)",
    }
    assert not run_checks("   ", checks)[0].passed


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=" \n\tab#`()\u00a0\u2028x", max_size=30), limit=st.integers(0, 6))
def test_the_verdict_is_the_checks_pass_or_fail(text: str, limit: int) -> None:
    from jarvis.checks import CHECKS, verdict

    args = {
        "max_words": {"limit": limit},
        "sections": {"required": ["# a"]},
        "docstring_sections": {"required": ["Args:"]},
    }
    for name, check in CHECKS.items():
        given_args = args.get(name, {})
        assert verdict(name, given_args)(text) is check(text, **given_args)[0], name


_PIECES = ["# a", " # a ", "# b", "x", "\n", "\r\n", " ", "\u2028", "```python\n", "```py \n",
           "```", "def f():\n", '    """Args: x"""\n', "    return 1\n", "return (\n"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=14),
    required=st.lists(st.sampled_from(["# a", "# b", " # a", ""]), max_size=3),
)
def test_the_verdicts_of_sections_and_code_are_the_checks(
    pieces: list[str], required: list[str]
) -> None:
    # render-dataset scores by verdicts that skip the checks' details (and, for sections,
    # a heading missing from the whole text): the same pass or fail on texts built of
    # headings, code fences and code, in and out of order.
    from jarvis.checks import CHECKS, verdict

    text = "".join(pieces)
    for name, args in (
        ("sections", {"required": required}),
        ("python_parses", {}),
        ("docstring_sections", {"required": ["Args:"]}),
    ):
        assert verdict(name, args)(text) is CHECKS[name](text, **args)[0], (name, text)
