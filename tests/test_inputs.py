"""Input readers: JSONL, JSON arrays, folders, gzip, BOM, CRLF, line numbers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from jarvis.errors import DatasetError, InputError
from jarvis.inputs import InputSpec, expand, iter_file


def test_input_spec_parses_tags() -> None:
    assert InputSpec.parse("data/x.jsonl") == InputSpec("data/x.jsonl", "default")
    assert InputSpec.parse("perfect=data/x.jsonl") == InputSpec("data/x.jsonl", "perfect")
    assert InputSpec.parse("dir/a=b.jsonl").tag == "default"
    with pytest.raises(InputError, match="tag"):
        InputSpec.parse("bad tag=x.jsonl")


def test_jsonl_lines_bom_crlf_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n{"a": 2}\r\n[1]\r\n{bad\r\n')
    records = list(iter_file(path, "x.jsonl"))
    assert [(r.line, r.value) for r in records] == [
        (1, {"a": 1}),
        (3, {"a": 2}),
        (4, None),
        (5, None),
    ]
    assert records[2].error == "expected a JSON object, got list"
    assert records[3].error is not None and records[3].error.startswith("invalid JSON")
    assert records[3].text == "{bad"


def test_gzip_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}'))
    assert [r.value for r in iter_file(path, "x")] == [{"a": 1}, {"a": 2}]


def test_json_array_items_report_their_start_line(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('\ufeff[\n  {"a": 1},\n  {"a": 2,\n   "b": 3}, 7\n]\n', encoding="utf-8")
    records = list(iter_file(path, "x.json"))
    assert [(r.line, r.value) for r in records] == [(2, {"a": 1}), (3, {"a": 2, "b": 3}), (4, None)]
    assert records[1].text == '{"a": 2,\n   "b": 3}'


def test_malformed_json_array_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('[\n {"a": 1},\n {"a": }\n]')
    with pytest.raises(InputError, match=r"^x.json:3: invalid JSON array \(item 2\)"):
        list(iter_file(path, "x.json"))


def test_expand_folder_recursive_sorted_and_empty(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.jsonl", "1.json", "3.jsonl.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    got = [p.relative_to(tmp_path).as_posix() for p in expand(InputSpec(str(tmp_path)))]
    assert got == ["1.json", "3.jsonl.gz", "b/2.jsonl"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="folder has no input files"):
        expand(InputSpec(str(tmp_path / "empty")))
    with pytest.raises(InputError, match="no such file or folder"):
        expand(InputSpec(str(tmp_path / "missing")))


def test_json_array_after_long_leading_whitespace(tmp_path: Path) -> None:
    # Regression: only the first 4096 bytes were looked at, so a JSON array preceded by more
    # whitespace than that was read as JSONL ("expected a JSON object, got list").
    path = tmp_path / "x.json.gz"
    path.write_bytes(gzip.compress(b"\xef\xbb\xbf" + b" \r\n" * 3000 + b'[{"a": 1},\n {"a": 2}]'))
    records = list(iter_file(path, "x.json.gz"))
    assert [(r.line, r.value) for r in records] == [(3001, {"a": 1}), (3002, {"a": 2})]
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n" * 10000)
    assert list(iter_file(blank, "blank.jsonl")) == []


def test_json_file_with_one_pretty_printed_object(tmp_path: Path) -> None:
    record = {"messages": [{"sender": "Sam", "text": "hi"}], "reply": "yo"}
    single = tmp_path / "one.json"
    single.write_text("\n\n" + json.dumps(record, indent=2) + "\n")
    (got,) = list(iter_file(single, "one.json"))
    assert (got.line, got.value, got.error) == (3, record, None)
    jsonl_named_json = tmp_path / "many.json"
    jsonl_named_json.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    assert [r.line for r in iter_file(jsonl_named_json, "many.json")] == [1, 2]
    with gzip.open(tmp_path / "one.json.gz", "wt") as fh:
        fh.write(json.dumps(record, indent=2))
    assert [r.value for r in iter_file(tmp_path / "one.json.gz", "one.json.gz")] == [record]
