"""Where pass 1's tasks and pass 2's share run (`jarvis.dataset.workers`): worker processes
give the same output and the same first error as one process, start when they should, and
leave the garbage collector as they found it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dataset_fixture import recipe, reply, write_jsonl
from jarvis.contract import load_contract
from jarvis.dataset import render_dataset
from jarvis.errors import (
    DatasetError,
    InputError,
    OutputExistsError,
    OutputWriteError,
    TokenizationError,
)
from tokenizer_fixture import make_tokenizer


def test_worker_processes_give_byte_identical_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2,600 records in 64 KB tasks: several in flight, duplicates, threads, repeats, tokens.
    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 1 << 16)
    tok = make_tokenizer(tmp_path / "tok")
    records = [reply(i, thread=f"t{i // 5}") for i in range(2000)] + [reply(7, thread="t1")]
    a = write_jsonl(tmp_path / "a.jsonl", records)
    p = write_jsonl(tmp_path / "p.jsonl", [reply(i, thread=f"p{i}") for i in range(5000, 5600)])
    settings = {"tokenizer": str(tok), "repeat": {"perfect": 3}}
    one = render_dataset(recipe(a, f"perfect={p}", **settings), tmp_path / "one", jobs=1)
    two = render_dataset(recipe(a, f"perfect={p}", **settings), tmp_path / "two", jobs=2)
    assert one == two
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "records.jsonl", "manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert one["duplicates"] == 1


def test_a_workers_results_come_back_through_a_file_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jarvis.dataset.scan import ParkedScan, Scanned

    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 4096)
    loaded: list[tuple[Path, Scanned]] = []
    load = ParkedScan.load

    def spy(self: ParkedScan) -> Scanned:
        loaded.append((self.path, load(self)))
        return loaded[-1][1]

    monkeypatch.setattr(ParkedScan, "load", spy)
    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(600)])
    two = render_dataset(recipe(src), tmp_path / "two", jobs=2)
    assert loaded and all(not path.exists() for path, _ in loaded)
    assert all(out.count == len(out.content) == len(out.key) > 0 for _, out in loaded)
    one = render_dataset(recipe(src), tmp_path / "one", jobs=1)
    assert one == two
    assert (tmp_path / "one" / "records.jsonl").read_bytes() == (
        tmp_path / "two" / "records.jsonl"
    ).read_bytes()


def test_pass_two_shared_with_a_worker_needs_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from jarvis.dataset.spill import Spill

    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 4096)
    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(900)])
    one = render_dataset(recipe(src), tmp_path / "one", jobs=1)
    shared: list[bool] = []
    share = Spill.share

    def no_links(*args: Any) -> None:
        raise OSError(1, "Operation not permitted")  # as on a file system without them

    def spy(self: Spill, readers: int) -> bool:
        shared.append(share(self, readers))
        return shared[-1]

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(Spill, "share", spy)
    two = render_dataset(recipe(src), tmp_path / "two", jobs=2)
    assert shared == [False] and one == two
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "records.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "one", "two"]


def test_a_write_that_fails_in_the_workers_share_of_pass_two_is_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from jarvis.dataset import scan, workers, write
    from jarvis.errors import OutputWriteError

    monkeypatch.setattr(scan, "TASK_BYTES", 4096)
    monkeypatch.setattr(workers, "_start_method", lambda: "fork")  # the worker has the patch
    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(900)])
    render_dataset(recipe(src), tmp_path / "out", jobs=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    written = write._Writer.write

    def full(self: Any, data: bytes, rows: int) -> None:
        if self.path.name == "records.jsonl":  # the worker's file
            raise OSError(errno.ENOSPC, "No space left on device")
        written(self, data, rows)

    monkeypatch.setattr(write._Writer, "write", full)
    with pytest.raises(OutputWriteError, match="No space left on device"):
        render_dataset(recipe(src), tmp_path / "out", force=True, jobs=2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]


def test_worker_processes_report_the_first_error_in_input_order(tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path / "tok")
    records = [reply(i) for i in range(1500)]
    records[1200]["reply"] = "word " * 400  # over the limit, after two full chunks
    records[1400]["reply"] = "word " * 500
    a = write_jsonl(tmp_path / "a.jsonl", records)
    messages = []
    for jobs in (1, 2):
        with pytest.raises(TokenizationError) as info:
            render_dataset(
                recipe(a, tokenizer=str(tok), max_seq_length=300), tmp_path / "o", jobs=jobs
            )
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"{a}:1201: row has ")
    assert not (tmp_path / "o").exists()


def test_default_jobs_follow_measured_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jarvis.dataset.workers import Workers

    monkeypatch.setattr("jarvis.dataset.workers.cpus", lambda: 12)
    # A worker started with forkserver: this process's start-up (1 s here) plus a spawn.
    monkeypatch.setattr("jarvis.dataset.workers._start_method", lambda: "forkserver")
    contract = load_contract("reply@1")

    def workers(jobs: int | None) -> Workers:
        return Workers(recipe(tmp_path), contract, None, None, jobs, 1.0, 100 << 20)  # type: ignore[arg-type]

    auto = workers(None)
    assert auto._want_pool() == 1  # nothing measured yet: this process alone
    auto.done_bytes = auto.seen_bytes = 2 << 20
    auto.busy = 0.1  # 50 ms a MB: 98 MB left take ~4.9 s, 8 processes save ~4.3 s > 1.4 s
    assert auto._want_pool() == 8  # one per CPU, at most 8
    auto.cpu = auto.busy * 6  # the tokenizer already kept 6 of the 12 cores busy
    assert auto._want_pool() == 8  # 8 processes: 4.9 s x (1 - 6/12) saved, still > 1.4 s
    auto.cpu = auto.busy * 10
    assert auto._want_pool() == 1  # 4.9 s x (1 - 10/12) = 0.8 s: less than a start costs
    auto.busy = auto.cpu = 0.02  # ~1 s left: a worker costs more to start than it saves
    assert auto._want_pool() == 1
    assert workers(3)._want_pool() == 3 and workers(1)._want_pool() == 1
    # A forked worker inherits what this process loaded: it costs a fork (0.05 s), so the
    # second of work left that saves 0.9 s pays for it, as does 0.8 s saved of 4.9.
    monkeypatch.setattr("jarvis.dataset.workers._start_method", lambda: "fork")
    assert auto._want_pool() == 8
    auto.busy, auto.cpu = 0.1, 1.0
    assert auto._want_pool() == 8
    auto.busy = auto.cpu = 0.0005  # 25 ms left: not even a fork pays
    assert auto._want_pool() == 1


def test_explicit_jobs_start_the_workers_first_and_an_early_error_stops_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    from jarvis.dataset.row import RowRenderer
    from jarvis.dataset.workers import start_early, stop_pool

    monkeypatch.setattr("jarvis.dataset.scan.TASK_BYTES", 4096)
    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(300)])
    size = src.stat().st_size
    contract = load_contract("reply@1")
    renderer = RowRenderer(contract, recipe(src))
    # Only an explicit count over one process, for more than one task of input.
    for jobs, nbytes in ((1, size), (None, size), (2, 4096)):
        assert start_early(recipe(src), contract, renderer, jobs, nbytes) is None
    pool = start_early(recipe(src), contract, renderer, 2, size)
    assert pool is not None and len(multiprocessing.active_children()) >= 1
    stop_pool(pool)
    # The renderer is built before the pool (a fork inherits it): its failure starts none.
    with pytest.raises(DatasetError, match="cannot keep the system prompt"):
        render_dataset(recipe(src, format="completions"), tmp_path / "out", jobs=2)
    assert multiprocessing.active_children() == [] and not (tmp_path / "out").exists()
    # The pool is up before the output folder is claimed; that failing stops it.
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError):
        render_dataset(recipe(src), tmp_path / "taken", jobs=2)
    assert multiprocessing.active_children() == []
    one = render_dataset(recipe(src), tmp_path / "one", jobs=1)
    two = render_dataset(recipe(src), tmp_path / "two", jobs=2)
    assert one["files"] == two["files"]


def test_explicit_jobs_on_a_single_task_of_input_start_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jarvis.dataset import scan, workers

    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(300)])
    assert not workers.starts_workers(8, scan.TASK_BYTES)
    assert workers.starts_workers(2, scan.TASK_BYTES + 1)
    assert not workers.starts_workers(None, 1 << 30) and not workers.starts_workers(1, 1 << 30)
    started: list[int] = []
    pool = workers._pool
    monkeypatch.setattr(workers, "_pool", lambda *a: started.append(a[-1]) or pool(*a))
    one = render_dataset(recipe(src), tmp_path / "one", jobs=1)
    eight = render_dataset(recipe(src), tmp_path / "eight", jobs=8)
    assert started == [] and one["files"] == eight["files"]
    monkeypatch.setattr(scan, "TASK_BYTES", 4096)  # now several tasks: 7 workers
    assert render_dataset(recipe(src), tmp_path / "many", jobs=8)["files"] == one["files"]
    assert started == [7]


def test_a_render_keeps_the_garbage_collector_out_of_its_way_and_restores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from jarvis.dataset import records

    seen: list[tuple[tuple[int, int, int], int]] = []
    keep = records._keep

    def watch(*args: Any) -> None:  # where this process commits each task's result
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        keep(*args)

    monkeypatch.setattr(records, "_keep", watch)
    before = gc.get_threshold()
    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(300)])
    render_dataset(recipe(src), tmp_path / "one")
    assert seen and all(t[0] == max(before[0], 50_000) and f > 0 for t, f in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    # A failing run restores them too (too many rejects, found after pass 1).
    bad = write_jsonl(tmp_path / "bad.jsonl", [reply(i) for i in range(200)] + [{"x": 1}] * 100)
    with pytest.raises(InputError, match="above --max-reject-rate"):
        render_dataset(recipe(bad), tmp_path / "bad")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    # A freeze the caller made stays theirs.
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        render_dataset(recipe(src), tmp_path / "two")
        # Neither unfrozen (0) nor frozen again (more: the run's own objects); frozen objects
        # may still die during the run, when a cache evicts them (`re`'s, an lru_cache's
        # parsed code: up to 179 of 171,557 seen in CI after other tests), never most.
        assert frozen // 2 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_a_render_whose_workers_fail_to_start_restores_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from jarvis.dataset import scan, workers

    def broken(*args: Any) -> None:
        raise OSError("no more processes")

    monkeypatch.setattr(scan, "TASK_BYTES", 4096)  # several tasks: --jobs 2 starts early
    monkeypatch.setattr(workers, "_pool", broken)
    before = gc.get_threshold()
    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(300)])
    # Inside the output's temp folder (the early process spills there): a clear error.
    with pytest.raises(OutputWriteError, match="no more processes"):
        render_dataset(recipe(src), tmp_path / "out", jobs=2)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_render_with_the_same_collector_settings(tmp_path: Path, method: str) -> None:
    import gc

    from jarvis.dataset import workers
    from jarvis.dataset.row import RowRenderer

    src = write_jsonl(tmp_path / "in.jsonl", [reply(i) for i in range(10)])
    contract = load_contract("reply@1")
    renderer = RowRenderer(contract, recipe(src))
    settings = workers.few_collections()  # as render_dataset does before it starts workers
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(workers, "_start_method", lambda: method)
            pool = workers._pool(recipe(src), contract, renderer, 1)
        try:
            threshold, frozen = pool.submit(_collector_settings).result(timeout=60)
        finally:
            workers.stop_pool(pool)
    finally:
        workers.restore_collections(settings)
    assert threshold[0] == 50_000 and frozen > 0  # inherited by a fork, else set at start
    assert gc.get_freeze_count() == 0


def _collector_settings() -> tuple[tuple[int, int, int], int]:
    import gc

    return gc.get_threshold(), gc.get_freeze_count()


def test_the_main_process_takes_back_queued_work_at_the_end() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from jarvis.dataset.workers import Workers

    gate, ran = threading.Event(), []

    def remote(x: int) -> int:  # the worker: stuck on its first item until the gate opens
        gate.wait(10)
        ran.append(("worker", x))
        return x * 10

    def here(x: int) -> int:
        ran.append(("here", x))
        if x == 1:  # the last item it takes back
            gate.set()
        return x * 10

    workers = Workers.__new__(Workers)  # just the scheduling, over a thread "worker"
    workers.executor, workers.count = ThreadPoolExecutor(1), 1
    try:
        done = list(workers._ordered(iter(range(8)), here, lambda x: (remote, (x,)), depth=3))
    finally:
        workers.executor.shutdown(wait=True)
    assert done == [(x, x * 10) for x in range(8)]  # in order, whoever ran them
    # Items 1 and 2 were queued for the worker but not started: they ran here instead.
    assert ("here", 1) in ran and ("here", 2) in ran and ran.count(("worker", 0)) == 1
    assert not any(who == "worker" and x in (1, 2) for who, x in ran)


def test_an_error_in_work_taken_back_comes_after_the_items_before_it() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from jarvis.dataset.workers import Workers

    gate = threading.Event()

    def remote(x: int) -> int:
        gate.wait(10)
        return x * 10

    def here(x: int) -> int:
        if x == 2:  # the first item taken back from the worker's queue fails
            gate.set()
            raise DatasetError("item 2 is bad")
        return x * 10

    workers = Workers.__new__(Workers)
    workers.executor, workers.count = ThreadPoolExecutor(1), 1
    done: list[tuple[int, int]] = []
    try:
        with pytest.raises(DatasetError, match="item 2 is bad"):
            for pair in workers._ordered(iter(range(8)), here, lambda x: (remote, (x,)), depth=3):
                done.append(pair)
    finally:
        workers.executor.shutdown(wait=True)
    assert done == [(0, 0), (1, 10)]  # what comes before it in order, nothing after
