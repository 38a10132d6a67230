"""Golden inputs for the snapshot tests: one set per bundled contract name."""

from __future__ import annotations

from typing import Any

REPLY: dict[str, dict[str, Any]] = {
    "short": {"messages": [{"sender": "Sam", "text": "you coming tonight?"}], "reply": "yea omw"},
    "long": {
        "thread": "t-rent",
        "messages": [
            {"sender": "+14025550101", "text": "Will be back jan"},
            {"sender": "+14025550101", "text": "We gotto pay rent"},
            {"sender": "Jwalin", "text": "yea u right"},
            {
                "sender": "+14025550101",
                "text": "can you venmo me by friday?\nlandlord is on my case",
            },
            {"sender": "Jwalin", "text": "ya ill send it tmrw"},
            {"sender": "+14025550101", "text": "ok thx. also what's the wifi pw again"},
        ],
        "reply": "what's the split on the 1905",
    },
    "unicode": {
        "messages": [
            {"sender": "Zoë", "text": "ça va? 🎉 我们明天见吗"},
            {"sender": "Jwalin", "text": "oui 👍"},
            {"sender": "Zoë", "text": "«parfait» — à demain\t:)"},
        ],
        "reply": "à demain 🙌",
    },
    "empty_optional": {
        "id": "r-0",
        "messages": [{"sender": "Mom", "text": ""}],
        "reply": "?",
        "retrieved": [],
        "tags": [],
    },
    "retrieved": {
        "messages": [{"sender": "Alex", "text": "dinner at 8?"}],
        "retrieved": [
            {"message": "lunch tmrw?", "reply": "ya 1pm works"},
            {"message": "wanna get food later", "reply": "down, where"},
        ],
        "reply": "ya where",
    },
}

CODEGEN: dict[str, dict[str, Any]] = {
    "short": {"instruction": "Add two numbers.", "output": "def add(a, b):\n    return a + b"},
    "long": {
        "instruction": "Write a function that returns the n-th Fibonacci number iteratively.",
        "input": "n = 10",
        "output": (
            '### Solution\n```python\ndef fib(n):\n    """Return the n-th Fibonacci number.\n\n'
            "    Args:\n        n: index, starting at 0.\n\n    Returns:\n        The number.\n"
            '    """\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n'
            "    return a\n```\n### Usage\n```python\nprint(fib(10))\n```\n### Sanity test\n"
            "```python\nassert fib(10) == 55\n```"
        ),
    },
    "unicode": {
        "instruction": "Écris une fonction qui inverse une chaîne — «résumé» → «émusér» 🙃",
        "input": "s = 'naïve'",
        "output": "def rev(s):\n    return s[::-1]",
    },
    "empty_optional": {
        "id": "c-0",
        "instruction": "Print hello.",
        "input": "",
        "output": "print('hello')",
        "tags": [],
    },
}

GOLDEN: dict[str, dict[str, dict[str, Any]]] = {"reply": REPLY, "codegen": CODEGEN}
