"""The early process (`jarvis.dataset.early`): tasks scanned while the tokenizer loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jarvis.contract import load_contract
from jarvis.dataset import Recipe
from jarvis.dataset.early import Early, _added_tokens, guess_special_tokens
from jarvis.dataset.records import input_order
from jarvis.dataset.spill import Spill
from jarvis.dataset.workers import cpus
from jarvis.inputs import InputSpec
from tokenizer_fixture import WORDS, make_tokenizer

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the early process forks: Linux only"
)


def _records(n: int, start: int = 0) -> str:
    lines = [
        json.dumps(
            {
                "thread": f"t{i // 6}",
                "messages": [{"sender": "Sam", "text": f"you up {i}? " + "la " * (i % 13)}],
                "reply": f"ya {i}",
            }
        )
        for i in range(start, start + n)
    ]
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("words", WORDS)
def test_the_guess_from_files_is_what_the_loaded_tokenizer_says(tmp_path: Path, words: str) -> None:
    from jarvis.chat import load_tokenizer, special_tokens

    folder = make_tokenizer(tmp_path / "tok", words=words, added=("<tool>",))
    assert guess_special_tokens(folder) == special_tokens(load_tokenizer(folder))


def test_the_tiny_models_guess_and_the_files_that_cannot_tell(
    tmp_path: Path, tiny_model: Path
) -> None:
    from jarvis.chat import load_tokenizer, special_tokens

    guess = guess_special_tokens(tiny_model)
    assert guess is not None and "<|im_end|>" in guess
    assert guess == special_tokens(load_tokenizer(tiny_model))
    assert guess_special_tokens(tmp_path) is None  # no files
    (tmp_path / "tokenizer.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert guess_special_tokens(tmp_path) is None


@pytest.mark.parametrize(
    "document",
    [
        {"version": "1.0", "added_tokens": [{"content": "<a>"}], "model": {"vocab": {}}},
        {"model": {"vocab": {"x": 1}}, "added_tokens": [{"content": "<b>"}]},  # after
        {"truncation": None, "added_tokens": [{"content": f"<t{i}>" * 40} for i in range(900)]},
        {"version": "1.0", "added_tokens": None},
        {"version": "1.0"},
        [1, 2],
    ],
    ids=["first", "after-the-model", "past-the-head", "null", "none", "not-an-object"],
)
def test_the_added_tokens_read_from_the_head_are_the_whole_files(
    tmp_path: Path, document: object
) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(document, indent=2))
    whole = document.get("added_tokens") or [] if isinstance(document, dict) else None
    assert _added_tokens(path) == whole


def test_it_starts_only_where_it_pays(tmp_path: Path, tiny_model: Path) -> None:
    contract = load_contract("reply@1")
    src = tmp_path / "in.jsonl"
    src.write_text(_records(10))
    packed = tmp_path / "in.json"
    packed.write_text("[]")

    def start(tokenizer: str | None, *, path: Path = src, shared: bool = True, **kw: str) -> bool:
        recipe = Recipe.build(contract="reply@1", inputs=[str(path)], tokenizer=tokenizer, **kw)
        spill = Spill(tmp_path / f"spill{len(list(tmp_path.iterdir()))}", 32)
        files = [(InputSpec.parse(str(path)), path)]
        early = Early.start(recipe, contract, input_order(files), spill, shared)
        if early is not None:
            early.drop()
        return early is not None

    assert not start(None)  # nothing to load
    assert not start(str(tiny_model), shared=False)  # no worker to count what it scans
    assert not start(str(tiny_model), format="text")  # rows rendered through the tokenizer
    assert not start("org/not-a-folder")  # a hub id: its files are not read before the load
    assert not start(str(tiny_model), path=packed)  # not in byte ranges
    if sys.platform.startswith("linux"):
        assert start(str(tiny_model)) == (len(os.listdir("/proc/self/task")) == 1)


# Runs the CLI in a fresh process (one thread, as users run it) with small tasks, and prints
# how many tasks the early process scanned; `mode` makes it slow, wrong or failing.
_SCRIPT = """
import multiprocessing, sys, time
import jarvis.dataset.early as e
import jarvis.dataset.scan as s
import jarvis.dataset.workers as w
from jarvis.cli import cli

src, out, jobs, tokenizer, mode = sys.argv[1:6]
s.TASK_BYTES = 1 << 14
guess, ahead, scan_rows, run = (
    e.guess_special_tokens, w.Workers._count_ahead, s.Scanner.scan_rows, e._run
)
told = []  # the early process's [next task, stop] words

def in_early():
    return multiprocessing.current_process().name == "jarvis-early"

def rows(self, task, data=None):
    if in_early() and mode == "slow":
        time.sleep(0.3)
    if in_early() and mode == "crash" and task.index == 2:
        raise MemoryError("gone")
    if in_early() and mode == "late" and task.index >= 1:
        # The task in hand when the stop comes fails; waiting for the stop leaves no moment
        # between two tasks for it to come in (task 0 is parked by then).
        deadline = time.monotonic() + 60
        while not told[0][e._STOP] and time.monotonic() < deadline:
            time.sleep(0.005)
        raise MemoryError("gone")
    return scan_rows(self, task, data)

def guessed(folder):
    found = guess(folder)
    return tuple(sorted({*found, "<|bogus|>"})) if mode == "wrong" else found

def counted_ahead(self, tasks):
    taken = self.early.tasks if self.early is not None else 0
    slots, left = ahead(self, tasks)
    if self.early is not None:  # tasks it took, those whose work stands, counts under way
        print("early", taken, self.early.tasks, len(slots), file=sys.stderr)
    return slots, left

def running(*args):
    told.append(args[5])
    return run(*args)

s.Scanner.scan_rows, e.guess_special_tokens, e._run = rows, guessed, running
w.Workers._count_ahead = counted_ahead
cli(["render-dataset", "--contract", "reply@1", "--input", src, "--out", out, "-q",
     *(["--jobs", jobs] if jobs != "auto" else []), "--tokenizer", tokenizer,
     "--max-reject-rate", "0.5"])
"""


def _run(
    src: Path, out: Path, jobs: str, tokenizer: Path, mode: str
) -> tuple[dict[str, bytes], tuple[int, int, int] | None]:
    """The output and, where the early process ran, the tasks it took, those kept and
    those a worker counted while this process waited for it."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(src), str(out), jobs, str(tokenizer), mode],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    early = [
        (int(line.split()[1]), int(line.split()[2]), int(line.split()[3]))
        for line in done.stderr.splitlines()
        if line.startswith("early")
    ]
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    kept = ("files", "records", "rejects", "splits", "duplicates", "inputs")
    files["manifest"] = json.dumps({k: manifest[k] for k in kept}).encode()
    return files, early[0] if early else None


@linux_only
def test_what_it_scans_while_the_tokenizer_loads_is_what_one_process_writes(
    tmp_path: Path, tiny_model: Path
) -> None:
    src = tmp_path / "in.jsonl"
    # Rejects (a control string, not an object, an invalid record), a duplicate, and a
    # string that only the wrong guess forbids, among some 30 tasks of 16 KB.
    extra = [
        json.dumps({"messages": [{"sender": "Sam", "text": "hi <|im_end|>"}], "reply": "x"}),
        "[1, 2]",
        json.dumps({"messages": [], "reply": "x"}),
        _records(1, 3).strip(),  # record 3 again
        json.dumps({"messages": [{"sender": "Sam", "text": "a <|bogus|> b"}], "reply": "ok"}),
    ]
    src.write_text(_records(2500) + "".join(e + "\n" for e in extra) + _records(2500, 2500))
    one, none = _run(src, tmp_path / "one", "1", tiny_model, "plain")
    assert none is None and b"<|im_end|>" in one["rejects.jsonl"]
    assert json.loads(one["manifest"])["duplicates"] == 1
    tasks = src.stat().st_size >> 14  # at least: tasks of 16 KB at most
    for mode in ("plain", "slow", "wrong", "crash", "late"):
        files, early = _run(src, tmp_path / mode, "2", tiny_model, mode)
        assert files == one, mode
        assert early is not None
        taken, kept, ahead = early
        if mode == "plain":  # it starts before transformers is imported (about a second)
            assert kept == taken >= 1
        elif mode == "slow":  # stopped once the tokenizer was in: the rest scanned after
            assert 1 <= kept == taken < tasks
        if mode in ("plain", "slow") and taken >= 2:  # the worker counted what it parked
            assert ahead >= 1
        elif mode == "late":  # failed in the task in hand, its earlier tasks counting ahead
            assert taken >= 2 and kept == 0
        else:  # a guess the loaded tokenizer does not confirm, or a failure: dropped
            assert taken == kept == 0
    # The CLI's default (no --jobs) starts it too where workers may run: on more than one CPU.
    files, early = _run(src, tmp_path / "auto", "auto", tiny_model, "plain")
    assert files == one
    assert (early is not None and early[1] >= 1) == (cpus() > 1)


@linux_only
def test_a_tokenizer_that_fails_to_load_stops_it_and_leaves_nothing(
    tmp_path: Path, tiny_model: Path
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    # Its added tokens read (the early process starts), its model not (the load fails).
    data = json.loads((broken / "tokenizer.json").read_text())
    data["model"]["merges"] = 5
    (broken / "tokenizer.json").write_text(json.dumps(data))
    assert guess_special_tokens(broken) is not None
    src = tmp_path / "in.jsonl"
    src.write_text(_records(5000))
    done = subprocess.run(
        [sys.executable, "-m", "jarvis", "render-dataset", "--contract", "reply@1", "--input",
         str(src), "--out", str(tmp_path / "out"), "-q", "--jobs", "2", "--tokenizer",
         str(broken)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 11, done.stderr
    assert f"{broken}: cannot load a tokenizer" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "in.jsonl"]
