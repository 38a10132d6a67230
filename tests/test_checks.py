"""Output checks on real-looking replies and code answers."""

from __future__ import annotations

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
