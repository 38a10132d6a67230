"""`jarvis render-dataset` through the CLI: exit codes, exact error lines, safe writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis.cli import cli
from jarvis.contract import bundled_root

EXAMPLES = bundled_root() / "examples"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["render-dataset", *args])
    return result.exit_code, result.stdout, result.stderr


def records(n: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"messages": [{"sender": "Sam", "text": f"you up {i}?"}], "reply": f"ya {i}"})
        + "\n"
        for i in range(start, start + n)
    )


def test_bundled_examples_render_for_both_contracts(tmp_path: Path) -> None:
    code, out, err = run(
        "--contract", "reply@1", "--input", str(EXAMPLES / "reply" / "threads.jsonl"),
        "--input", f"perfect={EXAMPLES / 'reply' / 'perfect.jsonl'}", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].startswith("reply@1 (")
    assert "perfect" in out and out.endswith(f"wrote {tmp_path / 'r'}\n")
    code, out, err = run(
        "--contract", "codegen@1", "--input", str(EXAMPLES / "codegen" / "instructions.jsonl"),
        "--input", f"perfect={EXAMPLES / 'codegen' / 'perfect.jsonl'}",
        "--out", str(tmp_path / "c"), "--min-compliant", "0.2", "-q",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["compliance"]["per_tag"]["perfect"] == 1.0
    assert min(manifest["splits"][s]["rows"] for s in ("train", "valid", "test")) >= 4


def test_malformed_line_is_named_file_colon_line(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    lines = records(40).splitlines()
    lines[16] = '{"messages": [{"sender": 7, "text": "hi"}], "reply": "yo"}'
    data.write_text("\n".join(lines) + "\n")
    code, _, err = run("--contract", "reply@1", "--input", str(data), "--out", str(tmp_path / "o"))
    assert code == 5
    assert err.splitlines()[0] == (
        f"error: {data}:17: messages[0].sender: Input should be a valid string"
    )
    assert not (tmp_path / "o").exists()


def test_empty_folder_fails_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        "--contract", "reply@1", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o")
    )
    assert code == 6
    assert err == (
        f"error: {tmp_path / 'empty'}: folder has no input files (.jsonl, .json, .jsonl.gz, "
        ".json.gz); nothing to train on\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_existing_output_needs_force(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text(records(100))
    args = ["--contract", "reply@1", "--input", str(data), "--out", str(tmp_path / "o"), "-q"]
    assert run(*args)[0] == 0
    code, _, err = run(*args)
    assert code == 12
    assert err == f"error: {tmp_path / 'o'} exists; pass --force to replace it\n"
    assert run(*args, "--force", "--seed", "2")[0] == 0


def test_option_errors(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text(records(100))
    base = ["--contract", "reply@1", "--input", str(data), "--out", str(tmp_path / "o")]
    code, _, err = run(*base, "--repeat", "perfect")
    assert (code, err) == (2, "error: --repeat 'perfect': expected TAG=N with N an integer\n")
    code, _, err = run(*base, "--split", "0.9,0.2,0.1")
    assert code == 2 and "must sum to 1" in err
    code, _, err = run("--input", str(data), "--out", str(tmp_path / "o"))
    assert code == 2 and "--contract is required" in err


def test_jobs_takes_a_number_or_auto_the_default(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text(records(100))
    base = ["--contract", "reply@1", "--input", str(data), "-q"]
    outs = []
    for jobs in (["--jobs", "auto"], ["-j", "AUTO"], [], ["--jobs", "1"], ["--jobs", "3"]):
        out = tmp_path / f"o{len(outs)}"
        code, _, err = run(*base, "--out", str(out), *jobs)
        assert (code, err) == (0, "")
        outs.append({p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".jsonl"})
    assert len(outs[0]) >= 4 and all(o == outs[0] for o in outs)
    for bad in ("0", "-1", "2.5", "two", ""):
        code, _, err = run(*base, "--out", str(tmp_path / "bad"), "--jobs", bad)
        assert code == 2
        assert err.splitlines()[-1] == (
            f"Error: Invalid value for '--jobs' / '-j': {bad!r} is neither auto nor a whole "
            "number of at least 1."
        )
        assert not (tmp_path / "bad").exists()


def test_recipe_file_with_cli_override(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(records(100))
    (tmp_path / "recipe.yaml").write_text(
        "contract: reply@1\ninputs: [x.jsonl]\nseed: 5\nsplit: [0.8, 0.1, 0.1]\n"
    )
    code, _, err = run("--recipe", str(tmp_path / "recipe.yaml"), "--seed", "9",
                       "--out", str(tmp_path / "o"), "-q")  # fmt: skip
    assert code == 0, err
    recipe = json.loads((tmp_path / "o" / "manifest.json").read_text())["recipe"]
    assert recipe["seed"] == 9 and recipe["split"] == [0.8, 0.1, 0.1]
    assert recipe["inputs"] == [str(tmp_path / "x.jsonl")]


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_cli_does_not_import_mlx(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(records(100))
    code = (
        "import sys\nfrom jarvis.cli import cli\n"
        "try:\n    cli(['render-dataset', '--contract', 'reply@1', '--input', sys.argv[1],"
        " '--out', sys.argv[2], '-q'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert not [m for m in sys.modules if m == 'mlx' or m.startswith('mlx.')]\n"
        "assert 'mlx_lm' not in sys.modules\n"
        "assert not {'starlette', 'uvicorn', 'sqlite3'} & set(sys.modules), 'HTTP or SQLite'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.jsonl"), str(tmp_path / "o")],
        capture_output=True, text=True, env=_subprocess_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "train.jsonl").is_file()


def _tagged(tag: str) -> list[int]:
    """Pids of live processes whose environment carries `tag` (a run's workers inherit it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if tag.encode() in (proc / "environ").read_bytes():
                status = (proc / "status").read_text()
                if "State:\tZ" not in status:
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


BIG = 240_000  # records: seconds of work, so a signal or a second writer lands mid-run


def _start_big_render(tmp_path: Path, out: Path, tag: str) -> subprocess.Popen[bytes]:
    big = tmp_path / "big.jsonl"
    if not big.exists():
        big.write_text(records(BIG))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jarvis", "render-dataset", "--contract", "reply@1",
         "--input", str(big), "--out", str(out), "--force", "-q", "--jobs", "2"],
        env={**_subprocess_env(), "JARVIS_TEST_RUN": tag},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    # Wait until it is writing its temp folder and its worker is up (mid-run): forked from
    # the CLI, which has one thread then, so there is no forkserver or resource tracker.
    while time.monotonic() < deadline:
        if list(tmp_path.glob(f".{out.name}.*.partial")) and len(_tagged(tag)) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    return proc


def _wait_gone(tag: str, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while _tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _tagged(tag)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_leaves_the_previous_output_intact_and_no_process(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text(records(100))
    out = tmp_path / "o"
    assert run("--contract", "reply@1", "--input", str(small), "--out", str(out), "-q")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    tag = f"sigkill-{os.getpid()}-{time.monotonic_ns()}"
    proc = _start_big_render(tmp_path, out, tag)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -9 and b"Traceback" not in err
    # The worker notices the parent's death and exits.
    assert _wait_gone(tag) == []
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "big.jsonl",
        "o",
        "small.jsonl",
    ]
    assert list(tmp_path.glob(".o.*.partial"))  # the killed run's partial...
    code, _, err = run("--contract", "reply@1", "--input", str(small), "--out", str(out), "-q")
    assert code == 12 and "exists; pass --force" in err
    assert not list(tmp_path.glob(".o.*.partial"))  # ...is removed by the next run


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_clean_up(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    out = tmp_path / "o"
    tag = f"sig{int(sig)}-{os.getpid()}-{time.monotonic_ns()}"
    proc = _start_big_render(tmp_path, out, tag)
    proc.send_signal(sig)
    _, raw = proc.communicate(timeout=30)
    err = raw.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.startswith("error: "), err
    assert _wait_gone(tag) == []
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["big.jsonl"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_concurrent_writers_of_one_out_exactly_one_wins(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text(records(100))
    out = tmp_path / "o"
    tag = f"race-{os.getpid()}-{time.monotonic_ns()}"
    first = _start_big_render(tmp_path, out, tag)
    code, _, err = run("--contract", "reply@1", "--input", str(small), "--out", str(out), "--force")
    assert code == 12
    assert err == f"error: {out}: another jarvis process is writing it; try again later\n"
    _, raw = first.communicate(timeout=120)
    assert first.returncode == 0, raw.decode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"]["read"] == BIG  # the first writer's output, whole


def test_force_never_replaces_an_input_or_a_project_folder(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text(records(50))
    code, _, err = run("--contract", "reply@1", "--input", str(raw), "--out", str(raw), "--force")
    assert code == 12
    assert err == f"error: {raw}: refusing to write the dataset there: it is the input {raw}\n"
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("print('hi')\n")
    code, _, err = run(
        "--contract", "reply@1", "--input", str(raw / "a.jsonl"), "--out", str(project), "--force"
    )
    assert code == 12 and "has no .jarvis-output.json" in err
    assert (raw / "a.jsonl").read_text() == records(50)
    assert [p.name for p in project.iterdir()] == ["app.py"]


def test_the_library_works_from_a_plain_script_without_a_main_guard(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text(records(70_000))  # over the 4 MB at which the CLI starts workers
    assert big.stat().st_size > 4 << 20
    script = tmp_path / "script.py"
    script.write_text(
        "from pathlib import Path\n"
        "from jarvis.dataset import Recipe, render_dataset\n"
        f"recipe = Recipe.build(contract='reply@1', inputs=[{str(big)!r}])\n"
        f"manifest = render_dataset(recipe, Path({str(tmp_path / 'out')!r}))\n"
        "print(manifest['records']['unique'])\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300,
        env=_subprocess_env(), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "70000"
    assert not list(tmp_path.glob(".out.*"))


def test_quiet_silences_summary_and_wrote_but_not_warnings(tmp_path: Path) -> None:
    code, out, err = run(
        "--contract", "codegen@1", "--input", str(EXAMPLES / "codegen" / "instructions.jsonl"),
        "--input", f"perfect={EXAMPLES / 'codegen' / 'perfect.jsonl'}",
        "--out", str(tmp_path / "c"), "-q",
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert err.startswith("warning: only 23.2% of training targets pass every output check")
    assert "try --repeat perfect=4" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is used on Linux only")
def test_with_a_tokenizer_the_cli_loads_it_once_and_its_forked_worker_inherits_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(records(15_000))
    # Each tokenizer load and the start method, recorded; the CLI sets one thread a process
    # itself (nothing set here), so it is still on one thread after loading and can fork.
    code = (
        "import os, sys\nimport jarvis.chat as c\nimport jarvis.dataset.workers as r\n"
        "from jarvis.cli import cli\n"
        "load, chosen = c.load_tokenizer, r._start_method\n"
        "def loaded(path):\n    print('load', os.getpid(), file=sys.stderr)\n"
        "    return load(path)\n"
        "def record():\n    method = chosen()\n    print(method, os.getpid(), file=sys.stderr)\n"
        "    return method\n"
        "c.load_tokenizer, r._start_method = loaded, record\n"
        "cli(['render-dataset', '--contract', 'reply@1', '--input', sys.argv[1],"
        " '--out', sys.argv[2], '-q', '--jobs', sys.argv[3], '--tokenizer', sys.argv[4]])\n"
    )
    env = {
        k: v
        for k, v in _subprocess_env().items()
        if k not in ("TOKENIZERS_PARALLELISM", "OPENBLAS_NUM_THREADS")
    }
    outs, logs = [], []
    for jobs in ("1", "2"):
        out = tmp_path / f"o{jobs}"
        done = subprocess.run(
            [sys.executable, "-c", code, str(src), str(out), jobs, str(tiny_model)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        logs.append(
            [line.split() for line in done.stderr.splitlines() if line[:4] in ("load", "fork")]
        )
        outs.append({p.name: p.read_bytes() for p in out.iterdir() if p.name != "manifest.json"})
    assert len(logs[0]) == 1 and logs[0][0][0] == "load"
    (load, pid), (method, parent) = logs[1]
    assert (load, method, pid) == ("load", "fork", parent)  # loaded once, here, then forked
    assert outs[0] == outs[1] and len(outs[0]) >= 4


def test_jobs_on_one_task_of_input_runs_one_process_with_the_tokenizer_threads_left_on(
    tmp_path: Path,
) -> None:
    # --jobs 2 on a few kilobytes: no worker to start (one task), and the fast tokenizer's
    # threads stay on; on a few megabytes: a worker, and one thread a process.
    code = (
        "import os, sys\nimport jarvis.dataset.workers as r\nfrom jarvis.cli import cli\n"
        "pool = r._pool\n"
        "def counted(*args):\n    print('pool', file=sys.stderr)\n    return pool(*args)\n"
        "r._pool = counted\n"
        "try:\n    cli(['render-dataset', '--contract', 'reply@1', '--input', sys.argv[1],"
        " '--out', sys.argv[2], '-q', '--jobs', '2'])\n"
        "finally:\n    print(os.environ.get('TOKENIZERS_PARALLELISM'), file=sys.stderr)\n"
    )
    env = {k: v for k, v in _subprocess_env().items() if k != "TOKENIZERS_PARALLELISM"}
    seen = []
    for n in (100, 15_000):
        src = tmp_path / f"in{n}.jsonl"
        src.write_text(records(n))
        done = subprocess.run(
            [sys.executable, "-c", code, str(src), str(tmp_path / f"o{n}")],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen.append(done.stderr.split())
    assert seen == [["None"], ["pool", "false"]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is used on Linux only")
def test_the_cli_forks_its_workers_where_it_runs_one_thread(tmp_path: Path) -> None:
    import threading

    from jarvis.dataset.workers import _start_method

    src = tmp_path / "in.jsonl"
    src.write_text(records(15_000))  # a few tasks of input
    # The CLI itself, in a fresh process, with the start method it chose recorded.
    code = (
        "import sys\nimport jarvis.dataset.workers as r\nfrom jarvis.cli import cli\n"
        "chosen = r._start_method\n"
        "def record():\n    method = chosen()\n    print(method, file=sys.stderr)\n"
        "    return method\n"
        "r._start_method = record\n"
        "cli(['render-dataset', '--contract', 'reply@1', '--input', sys.argv[1],"
        " '--out', sys.argv[2], '-q', '--jobs', sys.argv[3]])\n"
    )
    outs, methods = [], []
    for jobs in ("1", "2"):
        out = tmp_path / f"o{jobs}"
        done = subprocess.run(
            [sys.executable, "-c", code, str(src), str(out), jobs],
            capture_output=True, text=True, env=_subprocess_env(), timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        methods.append(done.stderr.split())
        outs.append({p.name: p.read_bytes() for p in out.iterdir() if p.name != "manifest.json"})
    assert methods == [[], ["fork"]]
    # Forked workers write what one process writes.
    assert outs[0] == outs[1] and len(outs[0]) >= 4
    # The default (no --jobs) on 8 MB, on two CPUs: numpy's BLAS kept on one thread, so the
    # workers that measurement starts fork too (OpenBLAS's own thread had ruled it out).
    src.write_text(records(100_000))
    auto = (
        "import os, sys\nimport jarvis.dataset.workers as r\nfrom jarvis.cli import cli\n"
        "chosen, r.cpus = r._start_method, lambda: 2\n"
        "def record():\n    method = chosen()\n    print(method, file=sys.stderr)\n"
        "    return method\n"
        "r._start_method = record\n"
        "try:\n    cli(['render-dataset', '--contract', 'reply@1', '--input', sys.argv[1],"
        " '--out', sys.argv[2], '-q'])\n"
        "finally:\n    print(os.environ.get('OPENBLAS_NUM_THREADS'), file=sys.stderr)\n"
    )
    env = {k: v for k, v in _subprocess_env().items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", auto, str(src), str(tmp_path / "auto")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    *chosen, blas = done.stderr.split()
    assert blas == "1" and chosen and set(chosen) == {"fork"}
    # What its forked workers wrote is what one process writes.
    assert run("--contract", "reply@1", "--input", str(src), "--out", str(tmp_path / "one"),
               "-q", "--jobs", "1")[0] == 0  # fmt: skip
    wrote = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir() if p.suffix == ".jsonl"}
    assert {p.name: p.read_bytes() for p in (tmp_path / "auto").iterdir()
            if p.suffix == ".jsonl"} == wrote  # fmt: skip
    gate = threading.Event()
    other = threading.Thread(target=gate.wait)
    other.start()
    try:  # another thread could hold a lock the child would inherit locked
        assert _start_method() in ("forkserver", "spawn")
    finally:
        gate.set()
        other.join()


def test_more_distinct_tags_than_a_run_takes_is_a_clear_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record's tag is 16 bits: 65,536 distinct tags (per-record labels put in `tags`)
    # were an internal error (OverflowError). The limit is lowered here to stay small; the
    # input's own tag (default) is one of them.
    monkeypatch.setattr("jarvis.dataset.records.MAX_TAGS", 3)
    src = tmp_path / "in.jsonl"
    lines = [{"messages": [{"sender": "Sam", "text": f"hi {i}"}], "reply": f"yo {i}",
              "tags": [f"t{i % 5}"]} for i in range(40)]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    code, _, err = run("--contract", "reply@1", "--input", str(src), "--out", str(tmp_path / "o"))
    assert code == 5
    assert err.splitlines()[0] == (
        f"error: {src}:3: tags[0]: 't2' would be tag 4; a run takes at most 3 distinct tags "
        "(a tag names a kind of record, as perfect or default: keep per-record labels in "
        "another field)"
    )
    assert not (tmp_path / "o").exists()
