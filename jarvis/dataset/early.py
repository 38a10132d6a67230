"""Records rendered while the tokenizer loads.

With `--tokenizer`, a run starts with about a second on one CPU: transformers' import and
the tokenizer's load, which every process that tokenizes needs (a worker forks after it, to
inherit the tokenizer). Where workers run (`--jobs`), one process forked before the load
(`Early`) takes the first tasks meanwhile and does every step of a task but the token count
(`Scanner.scan_rows`: read, validate, render, check, hash, spill), which needs no tokenizer,
only the control strings it will forbid in a record. Those are read from the tokenizer's
files, a guess that `stop` checks against the loaded tokenizer's own (`special_tokens`):
on any difference the early work is dropped, and its tasks are scanned again as if it had
never run. The tasks it did are then only counted (`Scanner.count`), here or in a worker;
those before the one it has in hand at `stop` even before `join` has waited for that one
(`workers.Workers`), as counting writes nothing that a failure there would leave behind.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from jarvis.contract import Contract
from jarvis.dataset.recipe import Recipe
from jarvis.dataset.row import RowRenderer
from jarvis.dataset.scan import Scanner, Task
from jarvis.dataset.spill import Spill
from jarvis.inputs import InputSpec, plain_lines

NAME = "early"  # its spill writer's folder, which also holds its tasks' results
# The shared words: the next task it may take, and whether it must take none.
_NEXT, _STOP = 0, 1
_CONFIG_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
                  "mask_token")  # fmt: skip
_TOKEN_LISTS = ("additional_special_tokens", "extra_special_tokens")
_HEAD_BYTES = 1 << 18  # Llama 3.2's 256 added tokens take 43 KB
_SPACE = re.compile(r"[ \t\n\r]*")


def guess_special_tokens(folder: Path) -> tuple[str, ...] | None:
    """What `chat.special_tokens` will say of the tokenizer in `folder`, read from its files
    without transformers: every added token, and every special token its config names.

    Returns:
        The sorted strings, or None where the files cannot tell (none, or not JSON).
    """
    try:
        added = _added_tokens(folder / "tokenizer.json")
        config = orjson.loads((folder / "tokenizer_config.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if added is None or not isinstance(config, dict):
        return None
    decoder = config.get("added_tokens_decoder")
    values: list[Any] = [*added]
    values += list(decoder.values()) if isinstance(decoder, dict) else []
    values += [config.get(key) for key in _CONFIG_TOKENS]
    for key in _TOKEN_LISTS:
        more = config.get(key)
        values += list(more.values()) if isinstance(more, dict) else list(more or [])
    found: set[str] = set()
    for value in values:
        content = value.get("content") if isinstance(value, dict) else value
        if isinstance(content, str) and content:
            found.add(content)
    return tuple(sorted(found))


def _added_tokens(path: Path) -> list[Any] | None:
    """The `added_tokens` of a `tokenizer.json` ([] where it has none, None where it is not an
    object). The Rust tokenizer writes them before the vocabulary, so the top-level keys are
    read from the file's head, one value at a time, and the whole file (7 MB for Qwen2.5:
    60 ms to parse, in the process that forks) only where the head does not reach them.

    Raises:
        OSError, orjson.JSONDecodeError: the file cannot be read, or is not JSON.
    """
    with path.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    text = head.decode("utf-8", "replace")  # a character cut at the end: past what is read
    decoder = json.JSONDecoder()

    def skip(at: int) -> int:
        space = _SPACE.match(text, at)
        return space.end() if space else at

    try:
        at = skip(0)
        if text[at] != "{":
            return None
        at = skip(at + 1)
        while text[at] != "}":
            key, at = decoder.raw_decode(text, at)
            at = skip(at)
            if not isinstance(key, str) or text[at] != ":":
                raise ValueError(at)
            value, at = decoder.raw_decode(text, skip(at + 1))
            if key == "added_tokens":
                return value if isinstance(value, list) else []
            at = skip(at)
            if text[at] == ",":
                at = skip(at + 1)
            elif text[at] != "}":
                raise ValueError(at)
        return []
    except (ValueError, IndexError):  # past the head, or not what Rust writes: read it all
        tokenizer = orjson.loads(path.read_bytes())
    if not isinstance(tokenizer, dict):
        return None
    return list(tokenizer.get("added_tokens") or [])


def _plain_files(order: Sequence[tuple[InputSpec, Path]]) -> int:
    """How many of the inputs, in processing order, are plain JSONL before the first that is
    not (the early process reads byte ranges only)."""
    for n, (_, path) in enumerate(order):
        if not plain_lines(path):
            return n
    return len(order)


@dataclass
class Early:
    """The process that scans the first tasks while this one loads the tokenizer."""

    process: Any  # multiprocessing's Process
    shared: Any  # [next task, stop], ints in shared memory
    lock: Any
    folder: Path  # its spill writer's, with its results
    special: tuple[str, ...]  # the control strings it renders with
    tasks: int = 0  # tasks it took (`stop`), or 0 once its work is dropped

    @classmethod
    def start(
        cls, recipe: Recipe, contract: Contract, order: Sequence[tuple[InputSpec, Path]],
        spill: Spill, workers: bool,
    ) -> Early | None:  # fmt: skip
        """Fork the early process, where it pays: a tokenizer to load from a local folder,
        `workers` that may share the counting of what it scanned (more than one task of
        input), rows rendered without the tokenizer (not `--format text`), a first input of
        plain JSONL (it reads byte ranges), and a fork that is safe (Linux, one thread here,
        as before the workers fork).

        Returns:
            It, or None where it would not run.
        """
        from jarvis.dataset.workers import thread_count

        if not workers or recipe.tokenizer is None or recipe.format == "text":
            return None
        if not sys.platform.startswith("linux") or thread_count() != 1:
            return None
        folder = Path(recipe.tokenizer).expanduser()
        special = guess_special_tokens(folder) if folder.is_dir() else None
        plain = order[: _plain_files(order)]
        if special is None or not plain:
            return None
        renderer = RowRenderer.before_tokenizer(contract, recipe, special)
        context = multiprocessing.get_context("fork")
        lock = context.Lock()
        shared = context.RawArray("q", 2)
        process = context.Process(
            target=_run,
            args=(recipe, contract, renderer, plain, spill, shared, lock),
            name="jarvis-early",
            daemon=True,
        )
        process.start()
        return cls(process, shared, lock, spill.folder / NAME, special)

    def stop(self, renderer: RowRenderer) -> int:
        """Tell it to take no more tasks, and check the guess against the loaded tokenizer
        (`renderer`'s); returns how many tasks it took (0: its work was dropped, its tasks to
        be scanned again). The last may still be in hand: `join` waits for it. Tasks before
        that one are parked (`path`) and may be counted meanwhile, nothing kept until
        `join` says its work stands."""
        from jarvis.chat import special_tokens

        with self.lock:
            self.shared[_STOP] = 1
            taken = int(self.shared[_NEXT])
        failed = not self.process.is_alive() and self.process.exitcode != 0
        if failed or special_tokens(renderer.tokenizer) != self.special:
            self.drop()
            return 0
        self.tasks = taken
        return taken

    def join(self) -> bool:
        """Wait for the task in hand (`stop` first); returns whether its work stands (else
        it is dropped, its tasks to be scanned again)."""
        self.process.join()
        if self.process.exitcode != 0:
            self.drop()  # again where `stop` dropped it: nothing left to remove
        return self.tasks > 0

    def drop(self) -> None:
        """End the process if it runs, and remove all it wrote."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.tasks = 0

    def path(self, task: Task) -> Path:
        """Where its results of `task` are parked (`Scanned.park`; read only once it has
        taken a later task, as `stop` tells, or `join` has waited: no file half-written)."""
        return self.folder / f"scan{task.index}"


def _run(
    recipe: Recipe, contract: Contract, renderer: RowRenderer,
    plain: Sequence[tuple[InputSpec, Path]], spill: Spill, shared: Any, lock: Any,
) -> None:  # fmt: skip
    """The early process: scan the tasks of the `plain` JSONL inputs in order until told to
    stop."""
    from jarvis.dataset.records import InputStats, file_tasks
    from jarvis.dataset.workers import exit_with_parent, few_collections

    exit_with_parent()
    few_collections()
    writer = spill.writer(NAME)
    scanner = Scanner(contract, renderer, recipe, writer)
    number = itertools.count().__next__
    try:
        for file, (spec, path) in enumerate(plain):
            item = InputStats(path=str(path), tag=spec.tag, sha256="")
            for task, data in file_tasks(file, path, spec.tag, number, item):
                with lock:  # taken only while the main process has not said stop
                    if shared[_STOP]:
                        return
                    shared[_NEXT] = task.index + 1
                scanner.scan_rows(task, data).park(spill.folder / NAME / f"scan{task.index}")
    finally:
        with contextlib.suppress(OSError):
            writer.close()
