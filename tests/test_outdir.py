"""Output folders: only jarvis's own are replaced, one writer at a time, crash-safe swaps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jarvis.errors import OutputExistsError, OutputRefusedError, OutputWriteError
from jarvis.outdir import MARKER, atomic_dir, check_output, marker_kind


def _write(dest: Path, text: str, *, force: bool = False, kind: str = "dataset") -> None:
    with atomic_dir(dest, kind=kind, force=force) as tmp:
        (tmp / "a.txt").write_text(text)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_keeps_previous_output_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    _write(dest, "good")
    with pytest.raises(RuntimeError), atomic_dir(dest, kind="dataset", force=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (dest / "a.txt").read_text() == "good"
    assert _visible(tmp_path) == ["out"]
    assert not list(tmp_path.glob(".out.*.partial"))
    with pytest.raises(OutputExistsError, match="exists; pass --force to replace it"):
        _write(dest, "again")
    _write(dest, "new", force=True)
    assert _visible(dest) == ["a.txt"] and (dest / "a.txt").read_text() == "new"
    assert marker_kind(dest) == "dataset"


def test_force_refuses_a_folder_jarvis_did_not_write(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    dest.mkdir()
    (dest / "main.py").write_text("print('mine')\n")
    with pytest.raises(OutputRefusedError, match=f"has no {MARKER}"):
        _write(dest, "x", force=True)
    assert (dest / "main.py").read_text() == "print('mine')\n"
    assert _visible(dest) == ["main.py"]


def test_force_refuses_another_kind_and_a_file(tmp_path: Path) -> None:
    _write(tmp_path / "adapter", "weights", kind="adapter")
    with pytest.raises(OutputRefusedError, match="holds a jarvis adapter, not a dataset"):
        _write(tmp_path / "adapter", "rows", force=True)
    assert (tmp_path / "adapter" / "a.txt").read_text() == "weights"
    (tmp_path / "file").write_text("keep")
    with pytest.raises(OutputRefusedError, match="this is not a folder"):
        _write(tmp_path / "file", "x", force=True)
    assert (tmp_path / "file").read_text() == "keep"


def test_refuses_an_output_that_is_holds_or_sits_inside_an_input(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.jsonl").write_text("{}\n")
    for dest, why in (
        (raw, "it is the input"),
        (tmp_path, "it holds the input"),
        (raw / "out", "it is inside the input folder"),
    ):
        with pytest.raises(OutputRefusedError, match=why):
            check_output(dest, kind="dataset", force=True, data=[raw])
    # An input file's folder is not an input: writing beside the file is fine.
    assert check_output(tmp_path / "out", kind="dataset", data=[raw / "x.jsonl"])


def test_legacy_dataset_folder_is_recognised(tmp_path: Path) -> None:
    dest = tmp_path / "old"
    dest.mkdir()
    (dest / "manifest.json").write_text('{"jarvis_version": "0.1.0"}')
    _write(dest, "new", force=True)
    assert (dest / "a.txt").read_text() == "new"


def test_a_held_lock_refuses_a_second_writer(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_dir(dest, kind="dataset") as tmp:
        (tmp / "a.txt").write_text("first")
        with pytest.raises(OutputExistsError, match="another jarvis process is writing it"):
            _write(dest, "second", force=True)
    assert (dest / "a.txt").read_text() == "first"


def test_unwritable_parent_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; a path under a regular file fails for everyone.
        (tmp_path / "file").write_text("")
        dest = tmp_path / "file" / "out"
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        dest = locked / "out"
    with pytest.raises(OutputWriteError, match="cannot write the output"):
        _write(dest, "x")


# A kill inside the swap itself: a child process replaces `out`, and SIGKILLs itself at the
# chosen point; the parent then checks what is on disk and what the next run does.
_KILL = """
import os, signal, sys
from pathlib import Path
import jarvis.outdir as outdir
dest, where = Path(sys.argv[1]), sys.argv[2]
real_replace, real_exchange = os.replace, outdir.exchange
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if where == "between-renames":
    outdir.exchange = lambda a, b: False
    calls = []
    def replace(a, b):
        real_replace(a, b)
        calls.append(1)
        if len(calls) == 1:
            die()
    outdir.os.replace = replace
elif where == "after-exchange":
    def exchange(a, b):
        assert real_exchange(a, b)
        die()
    outdir.exchange = exchange
with outdir.atomic_dir(dest, kind="dataset", force=True) as tmp:
    (tmp / "a.txt").write_text("new")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.parametrize("where", ["between-renames", "after-exchange"])
def test_sigkill_inside_the_swap_loses_nothing(tmp_path: Path, where: str) -> None:
    dest = tmp_path / "out"
    _write(dest, "old")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILL), str(dest), where],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr
    if where == "between-renames":
        assert not dest.exists()  # the window: the old output is only in .out.jarvis-old
        assert (tmp_path / ".out.jarvis-old" / "a.txt").read_text() == "old"
    else:
        assert (dest / "a.txt").read_text() == "new"  # one atomic step: never missing
    # The next run on the target finishes the job before anything else.
    with pytest.raises(OutputExistsError):
        _write(dest, "next")
    expected = "old" if where == "between-renames" else "new"
    assert (dest / "a.txt").read_text() == expected
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert leftovers == []


def test_stale_partials_of_the_target_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".out.abc123.partial"
    stale.mkdir()
    (stale / MARKER).write_text('{"written_by": "jarvis", "kind": "dataset"}')
    (stale / "big.jsonl").write_text("x" * 1000)
    other = tmp_path / ".other.abc123.partial"  # another target's: not ours to remove
    other.mkdir()
    _write(tmp_path / "out", "x")
    assert not stale.exists() and other.exists()
