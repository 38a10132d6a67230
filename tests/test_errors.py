"""Exit codes: one table in jarvis/errors.py, every error class on it, the README in sync."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from jarvis import errors
from jarvis.errors import EXIT_CODES, JarvisError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_error_class_has_a_documented_exit_code() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, JarvisError)
    ]
    assert len(classes) > 10
    for cls in classes:
        assert cls.exit_code in EXIT_CODES, cls
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), (
            f"{cls.__name__}: one-line docstring"
        )


def test_readme_exit_code_table_matches_errors_py() -> None:
    section = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE))
    assert sorted(int(code) for code in rows) == sorted(EXIT_CODES)
    for code, text in EXIT_CODES.items():
        assert rows[str(code)].replace("`", "") == text, code
