"""Where pass 1's tasks and pass 2's share run: this process alone, or with worker
processes, forked where this process can fork (they inherit its contract, renderer and
tokenizer), else started by a forkserver. `Workers` runs the tasks in input order, here
whenever the next result is not in yet, and starts its workers when measured cost says so
(the CLI's default) or at once (an explicit `--jobs`); the worker side of each task is a
module-level function, as the pool pickles it by name.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from jarvis.contract import Contract, load_contract
from jarvis.dataset import scan
from jarvis.dataset.early import Early
from jarvis.dataset.recipe import Recipe
from jarvis.dataset.row import RowRenderer, row_head
from jarvis.dataset.scan import ParkedScan, Scanned, Scanner, Task
from jarvis.dataset.spill import Spill
from jarvis.dataset.write import THE_REST, TRAIN_ROWS, Maps, merge_files, write_buckets
from jarvis.errors import JarvisError

# A worker process builds its own contract, renderer and spill files once (Jinja templates
# and tokenizers do not pickle); each task is answered with its compact `Scanned`.
_SCANNER: Scanner | None = None
# What a forked worker inherits from the process that forked it: its recipe, contract and
# renderer, the tokenizer loaded (seconds with transformers) and its shortcuts proven.
_PARENT: tuple[Recipe, Contract, RowRenderer] | None = None
_SPILL: Spill | None = None
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def exit_with_parent() -> None:
    """Exit this worker as soon as the process that started it dies (even by SIGKILL).

    A pool worker blocks on its task pipe, which every worker holds both ends of: without
    this, a killed parent leaves the workers, the forkserver and the resource tracker alive.
    """
    import signal
    import threading
    from multiprocessing.connection import wait

    # Ctrl-C reaches the whole process group: the parent handles it and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="jarvis-parent-watch", daemon=True).start()


def _init_worker(recipe: Recipe, root: str) -> None:
    global _SCANNER
    exit_with_parent()
    if _PARENT is not None and _PARENT[0] is recipe:  # forked: the same objects, in memory
        _, contract, renderer = _PARENT
    else:
        contract = load_contract(recipe.contract, root=root)
        renderer = RowRenderer(contract, recipe)
    _SCANNER = Scanner(contract, renderer, recipe, None)
    if _PARENT is None:  # a fork inherited the parent's settings (`few_collections`)
        few_collections()  # this process only renders
    # Pass 2 needs numpy: imported now, while the main process starts scanning, rather than
    # before the fork (its time on one CPU) or at pass 2 (0.05-0.1 s there, traced).
    import numpy  # noqa: F401


def _warm() -> None:
    """Nothing: one per worker, submitted so that the pool starts them (and their loading)
    at once instead of on demand."""


def _worker_spill(folder: Path, buckets: int) -> Spill:
    global _SPILL
    if _SPILL is None or _SPILL.folder != folder:
        assert _SCANNER is not None
        head = row_head(_SCANNER.contract, _SCANNER.renderer.format)
        _SPILL = Spill(folder, buckets, create=False, row_head=head)
    return _SPILL


def _scan_task(task: Task, folder: Path, buckets: int) -> ParkedScan:
    assert _SCANNER is not None
    spill = _worker_spill(folder, buckets)
    name = f"w{os.getpid()}"
    if _SCANNER.spill is None:
        _SCANNER.spill = spill.writer(name)
    return _SCANNER.scan(task).park(folder / name / f"scan{task.index}")


def _count_task(task: Task, path: Path) -> ParkedScan:
    """Count the tokens of a task the early process scanned (`early`)."""
    assert _SCANNER is not None
    counted = _SCANNER.count(task, ParkedScan(path).load())
    return counted.park(path.with_name(f"counted{task.index}"))


def _write_task(
    tmp: Path, folder: Path, buckets: int, maps: Path, has_rows: list[bool], linked: bool
) -> dict[str, dict[str, Any]]:
    """A worker's share of pass 2 (`THE_REST`): the spill's second reader where it has
    its own links, else a reader of the same files that leaves them (`Spill.share`)."""
    spill = _worker_spill(folder, buckets)
    files, _ = write_buckets(
        tmp, spill, Maps.load(maps), None, None, has_rows, THE_REST,
        reader=1 if linked else 0, keep=not linked,
    )  # fmt: skip
    return files


def start_early(
    recipe: Recipe, contract: Contract, renderer: RowRenderer, jobs: int | None, size: int
) -> Executor | None:
    """Start `jobs - 1` workers now, for an explicit `--jobs` and more than one task of
    input, before this process reads any: forked, they inherit `renderer` and its tokenizer;
    else each loads its own while this process starts scanning.

    Returns:
        The pool for `Workers`, or None (auto, one process, or a single task).
    """
    if jobs is None or not starts_workers(jobs, size):
        return None
    executor = _pool(recipe, contract, renderer, jobs - 1)
    for _ in range(jobs - 1):
        executor.submit(_warm)
    return executor


def starts_workers(jobs: int | None, size: int) -> bool:
    """Whether an explicit `--jobs` runs worker processes on `size` bytes of input: more
    than one job, and more than one task of input to share (else one process does it all,
    without a worker's start-up, and its tokenizer keeps its threads)."""
    return jobs is not None and jobs > 1 and size > scan.TASK_BYTES


def may_start_workers(jobs: int | None, size: int) -> bool:
    """Whether workers may run on `size` bytes of input: more than one task of it, and an
    explicit `--jobs` over one (`starts_workers`) or, for auto (None), more than one CPU."""
    return starts_workers(jobs, size) or (jobs is None and cpus() > 1 and size > scan.TASK_BYTES)


def _pool(recipe: Recipe, contract: Contract, renderer: RowRenderer, n: int) -> Executor:
    from concurrent.futures import ProcessPoolExecutor

    global _PARENT
    method = _start_method()
    _PARENT = (recipe, contract, renderer) if method == "fork" else None
    return ProcessPoolExecutor(
        max_workers=n,
        # A calling script needs the `if __name__ == "__main__":` guard (forkserver).
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(recipe, str(contract.root)),
    )


def stop_pool(executor: Executor) -> None:
    """Shut the workers down, and let this process drop what it kept for them to inherit."""
    global _PARENT
    executor.shutdown(wait=True, cancel_futures=True)
    _PARENT = None


def _start_method() -> str:
    """How to start workers: a plain fork where it is safe, else a forkserver (spawn where
    there is none). A fork costs milliseconds where a forkserver child pays 0.5 s importing
    jarvis again, but forking a process whose other threads (tokenizers, mlx, BLAS) may hold
    locks can deadlock: only on Linux, and only while this process runs one thread (as the
    CLI does when `--jobs` starts its workers, before it loads anything else)."""
    if sys.platform.startswith("linux") and thread_count() == 1:
        return "fork"
    return _START_METHOD


def thread_count() -> int:
    """This process's OS threads (0: unknown)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def one_thread_per_process() -> None:
    """Where workers may start (`may_start_workers`: an explicit `--jobs N` over more than
    a task of input, or the default on more than one CPU), before anything is imported:
    processes of one thread.

    The fast tokenizer's thread pool and numpy's BLAS threads would only oversubscribe the
    cores the processes fill, and a process still on its one thread after loading its
    tokenizer can fork its workers, which then inherit it instead of loading it again (1.6 s
    for Qwen2.5 alone, 2.4 s each when two load at once). Nothing here multiplies matrices,
    yet OpenBLAS starts a thread per core as numpy loads: with it, the default's workers
    had started with `forkserver`, each importing jarvis again and loading its own
    tokenizer. A value already set is kept.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# The first generation's threshold during a render (Python's default: 700 allocations).
_GC_THRESHOLD = 50_000


def few_collections() -> tuple[tuple[int, int, int], bool]:
    """Keep the cyclic garbage collector out of a render's way; returns what
    `restore_collections` needs.

    The hot loop makes no reference cycles (with collection off, a 200,000-record run left
    none to collect; with Qwen2.5, 39 objects from its load), only short-lived containers (a
    record's dicts, a batch's token lists) that reference counting frees; yet at Python's default
    threshold the collector ran every 700 of them, and rescanned everything alive, the
    tokenizer and transformers' objects included: 15% of the CPU with the Qwen2.5 tokenizer
    (60,000 records: 5.94 s against 5.03, medians of 3), 4% without one. So the objects
    alive now are frozen out of collections (frozen before a fork, as Python's `gc.freeze`
    documentation advises), and the first generation is collected every 50,000
    allocations. A freeze the caller made is left as it is.
    """
    old = gc.get_threshold()
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    gc.set_threshold(max(old[0], _GC_THRESHOLD), old[1], old[2])
    return old, froze


def restore_collections(settings: tuple[tuple[int, int, int], bool]) -> None:
    """Undo `few_collections`."""
    threshold, froze = settings
    gc.set_threshold(*threshold)
    if froze:
        gc.unfreeze()


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


_DEPTH = 3  # pass-1 tasks in flight per worker (`Workers._ordered`)


class Workers:
    """Where tasks run: this process, plus `jobs - 1` worker processes when they pay.

    This process scans a task itself whenever the next result in order is not ready, so
    starting workers costs it no waiting and `jobs` processes scan in all. `jobs` None
    decides by measurement: the first tasks run here and time the work per input byte
    (wall and CPU); workers start when the time they would save on the input left exceeds
    what one costs to start: a fork, where this process can fork (`_start_method`), else
    this process's own start-up, measured, plus a spawn.
    """

    _SPAWN_SECONDS = 0.4  # a forkserver child, with imports, on a slow machine
    # A fork of this process: ready for its first task in 7-13 ms (measured, with and
    # without Qwen2.5 loaded); a worker's first tasks then take longer while its caches warm
    # (130-180 ms against 85-130 later, traced with Qwen2.5).
    _FORK_SECONDS = 0.05

    def __init__(
        self, recipe: Recipe, contract: Contract, scanner: Scanner, spill: Spill,
        jobs: int | None, startup: float, total_bytes: int, executor: Executor | None = None,
        early: Early | None = None,
    ) -> None:  # fmt: skip
        self.recipe = recipe
        self.contract = contract
        self.scanner = scanner
        self.spill = spill
        self.jobs = jobs
        self.startup = startup
        self.total = max(total_bytes, 1)
        self.done_bytes = 0  # measured bytes (after the first task)
        self.seen_bytes = 0  # all bytes scanned here
        self.warm = False
        self.busy = 0.0
        self.cpu = 0.0
        self.executor: Executor | None = executor  # started early (`start_early`), or later
        self.count = 0 if executor is None else (jobs or 1) - 1  # worker processes
        self.early = early  # the first tasks scanned while the tokenizer loaded, if any

    def _want_pool(self) -> int:
        """How many processes should scan from now on (1: this one alone)."""
        if self.jobs is not None:
            return self.jobs if starts_workers(self.jobs, self.total) else 1
        cores = cpus()
        n = min(cores, 8)
        if n < 2 or self.done_bytes < scan.TASK_BYTES // 2:
            return 1
        left = self.busy / self.done_bytes * (self.total - self.seen_bytes)
        # One process may already keep more than a core busy (the fast tokenizer encodes a
        # batch on every core): n processes cannot do better than the cores allow.
        load = max(1.0, self.cpu / self.busy) if self.busy else 1.0
        saved = left * (1 - max(1 / n, load / cores))
        forks = _start_method() == "fork"  # a forked worker inherits all this one loaded
        cost = self._FORK_SECONDS if forks else self.startup + self._SPAWN_SECONDS
        return n if saved > cost else 1

    def _start(self, n: int) -> Executor:
        self.count = n
        return _pool(self.recipe, self.contract, self.scanner.renderer, n)

    def _here(self, task: Task, data: bytes | None) -> Scanned:
        return self._timed(task, lambda: self.scanner.scan(task, data))

    def _count_here(self, task: Task) -> Scanned:
        """Count the tokens of a task the early process scanned."""
        assert self.early is not None
        parked = ParkedScan(self.early.path(task))
        return self._timed(task, lambda: self.scanner.count(task, parked.load()))

    def _timed(self, task: Task, run: Callable[[], Scanned]) -> Scanned:
        """Run a task here, timed for `_want_pool`."""
        t, cpu = time.perf_counter(), time.process_time()
        scanned = run()
        self.seen_bytes += task.size
        if self.warm:  # the first task pays one-off costs (probes, first compiles)
            self.busy += time.perf_counter() - t
            self.cpu += time.process_time() - cpu  # every thread's
            self.done_bytes += task.size
        self.warm = True
        return scanned

    def results(
        self, tasks: Iterator[tuple[Task, bytes | None]]
    ) -> Iterator[tuple[tuple[Task, bytes | None], Scanned]]:
        """Yield each pass-1 task with its result, in task order."""
        ahead, tasks = self._count_ahead(tasks)
        early = self.early.tasks if self.early is not None else 0

        def here(item: tuple[Task, bytes | None]) -> Scanned:
            return self._here(*item) if item[0].index >= early else self._count_here(item[0])

        def remote(item: tuple[Task, bytes | None]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
            task = item[0]
            if task.index < early:
                assert self.early is not None
                return _count_task, (task, self.early.path(task))
            return _scan_task, (task, self.spill.folder, self.spill.buckets_n)

        ordered: Iterator[tuple[tuple[Task, bytes | None], Scanned | ParkedScan]] = self._ordered(
            tasks, here, remote, depth=_DEPTH, window=ahead
        )
        for task, out in ordered:
            yield task, out.load() if isinstance(out, ParkedScan) else out

    def _count_ahead(
        self, tasks: Iterator[tuple[Task, bytes | None]]
    ) -> tuple[deque[_Slot[Any, Any]], Iterator[tuple[Task, bytes | None]]]:
        """Wait for the early process's task in hand (`Early.join`), the workers meanwhile
        counting the tasks it parked before: a worker forked after the tokenizer loaded
        would else wait idle, and this process too. Counting writes nothing, so where
        `join` drops the early work their counts are dropped as well, and those tasks are
        scanned again like the rest.

        Returns:
            The window's first slots (the counts under way), and the tasks left.
        """
        early, ahead = self.early, deque[_Slot[Any, Any]]()
        if early is None:
            return ahead, tasks
        if self.executor is not None:
            # Parked: every task it took before the one it may still have in hand.
            while len(ahead) < min(early.tasks - 1, _DEPTH * self.count):
                item = next(tasks, _END)
                if item is _END:
                    break
                assert item[0].index < early.tasks - 1  # its tasks come first, in order
                future = self.executor.submit(_count_task, item[0], early.path(item[0]))
                ahead.append(_Slot(item, future))
        if early.join():
            return ahead, tasks
        for slot in ahead:  # a count that runs already ends in an error nobody reads
            assert slot.future is not None
            slot.future.cancel()
        return deque(), itertools.chain((slot.item for slot in ahead), tasks)

    def write(
        self, tmp: Path, spill: Spill, maps: Maps, has_rows: list[bool]
    ) -> dict[str, dict[str, Any]]:
        """Pass 2 (`write.write_buckets`): in this process alone, or shared by file with a
        worker, each of the two reading every bucket; returns the files written.

        With a worker this process writes train's rows, the worker the rest (`Share`): each
        forms and writes and hashes its own files, so no bucket's output is handed over
        (which cost more than it saved, traced).
        """
        if self.executor is None:
            return write_buckets(tmp, spill, maps, None, None, has_rows)[0]
        folder = maps.save(spill.folder / "maps")
        linked = spill.share(2)
        theirs = self.executor.submit(
            _write_task, tmp, spill.folder, spill.buckets_n, folder, has_rows, linked
        )
        try:
            mine, _ = write_buckets(
                tmp, spill, maps, None, None, has_rows, TRAIN_ROWS, keep=not linked
            )
        except BaseException:
            wait([theirs])  # its files are in `tmp`, which the caller removes
            raise
        files = merge_files(mine, theirs.result())
        # Nothing is left for the workers: they exit while this process writes the manifest
        # and swaps the output in (`close` then waits for them, most often not at all).
        self.executor.shutdown(wait=False)
        return files

    def _ordered(
        self,
        items: Iterator[T],
        here: Callable[[T], R],
        remote: Callable[[T], tuple[Callable[..., R], tuple[Any, ...]]],
        *,
        depth: int,
        window: deque[_Slot[T, R]] | None = None,
    ) -> Iterator[tuple[T, R]]:
        """Run every item here or in a worker; yield (item, result) in item order.

        Workers start once measurement says so; `depth`: items in flight per worker, and
        `2 * depth` per process in the window at most; `window`: the first items' slots,
        already under way (the items after them are `items`).
        """
        window = deque() if window is None else window
        more = True
        try:
            while more or window:
                if more and self.executor is None:
                    n = self._want_pool()
                    if n > 1:
                        self.executor = self._start(n - 1)
                # Keep every worker fed with `depth` items ahead, the window bounded (results
                # done but not yet consumed count too).
                most = 2 * depth * (self.count + 1)
                while (
                    more
                    and self.executor is not None
                    and len(window) < most
                    and _in_flight(window) < depth * self.count
                ):
                    item = next(items, _END)
                    if item is _END:
                        more = False
                        break
                    fn, args = remote(item)
                    window.append(_Slot(item, self.executor.submit(fn, *args)))
                if window and window[0].ready():
                    yield window.popleft().result()
                elif more and len(window) < most:
                    # The next result is not in yet: run the next item here meanwhile.
                    item = next(items, _END)
                    if item is _END:
                        more = False
                        continue
                    window.append(_Slot(item, None, here(item)))
                elif window:
                    # Nothing new to take: run here an item a worker has not started yet
                    # (the latest first), so the run does not end waiting on its queue.
                    stolen = next((s for s in reversed(window) if s.steal()), None)
                    if stolen is None:
                        yield window.popleft().result()
                        continue
                    try:
                        stolen.done = here(stolen.item)
                    except JarvisError:
                        while window[0] is not stolen:  # the error after what comes before
                            yield window.popleft().result()
                        window.clear()
                        raise
        except JarvisError:
            # Reading ahead (an invalid JSON array, say) failed: the items before it come
            # first, so the error is the first one in input order, as with no workers.
            while window:
                yield window.popleft().result()
            raise

    def close(self) -> None:
        if self.executor is not None:
            stop_pool(self.executor)


_END: Any = object()
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T, R]):
    """An item in the window: run here (`done`) or in a worker (`future`)."""

    item: T
    future: Future[R] | None
    done: R | None = None

    def ready(self) -> bool:
        return self.done is not None or (self.future is not None and self.future.done())

    def steal(self) -> bool:
        """Take the item back from a worker that has not started it (it is then run here)."""
        if self.done is None and self.future is not None and self.future.cancel():
            self.future = None
            return True
        return False

    def result(self) -> tuple[T, R]:
        if self.done is None:
            assert self.future is not None
            self.done = self.future.result()
        return self.item, self.done


def _in_flight(window: deque[_Slot[Any, Any]]) -> int:
    return sum(1 for slot in window if slot.future is not None and not slot.future.done())
