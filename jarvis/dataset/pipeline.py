"""`render_dataset`: the two passes into a temp folder, renamed into place atomically."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import orjson

from jarvis.contract import Contract, load_contract
from jarvis.dataset.early import Early
from jarvis.dataset.manifest import build_manifest, manifest_bytes
from jarvis.dataset.plan import enforce_composition, plan_splits, share_of
from jarvis.dataset.recipe import MANIFEST, REJECTS, Recipe
from jarvis.dataset.records import PassOneState, input_order, pass_one
from jarvis.dataset.retrieval import EXEMPLARS, retrieve_rows
from jarvis.dataset.row import RowRenderer, row_head
from jarvis.dataset.scan import Scanner
from jarvis.dataset.spill import Spill, bucket_count
from jarvis.dataset.workers import (
    Workers,
    few_collections,
    may_start_workers,
    one_thread_per_process,
    restore_collections,
    start_early,
    stop_pool,
)
from jarvis.dataset.write import Maps, write_buckets
from jarvis.errors import (
    InputError,
    JarvisError,
    UsageError,
)
from jarvis.files import sha256_file
from jarvis.inputs import InputSpec, expand
from jarvis.outdir import atomic_dir
from jarvis.splits import SPLITS

# --- the command ---------------------------------------------------------------------------


def _check_option_tags(recipe: Recipe, tags: set[str]) -> None:
    """Every tag an option names has records (an input's tag, or a record's own)."""
    for option, names in (
        ("--train-only", recipe.train_only),
        ("--repeat", list(recipe.repeat)),
        ("--min-ratio", list(recipe.min_ratio)),
    ):
        for tag in names:
            if tag not in tags:
                raise UsageError(
                    f"{option} {tag}: no input has the tag {tag!r} "
                    f"(tags: {', '.join(sorted(tags))}); tag an input as --input {tag}=PATH "
                    f'or its records as "tags": ["{tag}"]'
                )


def _collect_files(recipe: Recipe, contract: Contract) -> list[tuple[InputSpec, Path]]:
    specs = recipe.input_specs()
    if "tags" not in contract.schema.model_fields:
        _check_option_tags(recipe, {s.tag for s in specs})  # known now: refuse before reading
    files: list[tuple[InputSpec, Path]] = []
    for spec in specs:
        files += [(spec, p) for p in expand(spec)]
    return files


def render_dataset(
    recipe: Recipe,
    out: Path,
    *,
    force: bool = False,
    root: str | Path | None = None,
    progress: bool = False,
    jobs: int | Literal["auto"] = 1,
    one_thread: bool = False,
) -> dict[str, Any]:
    """Render, check and write an mlx-lm dataset folder from raw records.

    Args:
        recipe: every setting (CLI options or `--recipe` file).
        out: the output folder (`train.jsonl`, `valid.jsonl`, `test.jsonl`, `records.jsonl`,
            `rejects.jsonl` when any, `manifest.json`).
        force: replace an existing `out`.
        root: contract root (default `$JARVIS_ROOT`, else the bundled root).
        progress: show a progress bar on stderr when it is a terminal.
        jobs: processes that read, validate, render and tokenize, this one included;
            default 1 (no workers, so a plain script needs no `if __name__ == "__main__":`
            guard); "auto" (the CLI's default): one per CPU (at most 8) once the first
            megabytes, timed here, show the time they would save exceeds what a worker
            costs to start. Workers need the guard in a calling script. The output is
            byte-identical whatever the number.
        one_thread: where workers may start (an explicit `jobs` over more than one task
            of input, or "auto" on more than one CPU), set one thread a process
            (`workers.one_thread_per_process`) before the tokenizer and numpy load, so
            that workers fork with the loaded tokenizer. The CLI's choice: it changes the
            process's environment, which a library leaves to its caller.

    Returns:
        The manifest written to `out/manifest.json`.

    Raises:
        OutputExistsError: `out` exists and `force` is false.
        InputError: a missing input, or more rejected records than `--max-reject-rate`.
        DatasetError: nothing to train on, a split below `--min-split-rows`, or a composition
            threshold (`--min-ratio`, `--min-compliant`) not met.
        TokenizationError: a row over `--max-seq-length`, or a prompt that is not a token
            prefix of its row.
    """
    started = time.perf_counter()
    contract = load_contract(recipe.contract, root=root if root is not None else recipe.root)
    files = _collect_files(recipe, contract)
    size = sum(path.stat().st_size for _, path in files)
    explicit = None if jobs == "auto" else jobs
    # Where workers may start, and so share the counting of what the early process scans.
    shared = may_start_workers(explicit, size)
    if one_thread and shared:  # before numpy or a tokenizer loads
        one_thread_per_process()
    data = [s.path for s in recipe.input_specs()]
    reads: list[str | os.PathLike[str]] = [
        contract.root,
        *([recipe.tokenizer] if recipe.tokenizer is not None else []),
    ]
    with atomic_dir(Path(out), kind="dataset", force=force, inputs=reads, data=data) as tmp:
        head = row_head(contract, recipe.format)
        spill = Spill(tmp / ".spill", bucket_count(size), row_head=head)
        early = Early.start(recipe, contract, input_order(files), spill, shared)
        pool = None
        gc_settings = None
        try:
            renderer = RowRenderer(contract, recipe)  # with a tokenizer: seconds to load
            startup = time.perf_counter() - started  # what a worker pays again before a task
            gc_settings = few_collections()  # before a fork: a forked worker inherits them
            pool = start_early(recipe, contract, renderer, explicit, size)
            if early is not None:
                early.stop(renderer)  # `Workers` joins it, any workers counting meanwhile
            bar = _progress_bar(size) if progress and sys.stderr.isatty() else None
            writer = spill.writer("main")
            scanner = Scanner(contract, renderer, recipe, writer)
            workers = Workers(
                recipe, contract, scanner, spill, None if jobs == "auto" else max(1, jobs),
                startup, size, pool, early,
            )  # fmt: skip
            pool = None  # the workers own the pool now
            try:
                manifest = _render_into(tmp, recipe, contract, renderer, files, spill, bar, workers)
            except JarvisError as exc:
                # The run fails, so `out` keeps its previous content, but the rejects that made
                # it fail must stay readable: they move beside `out`.
                kept = _keep_rejects(tmp / REJECTS, Path(out))
                if kept is not None:
                    exc.args = (f"{exc}\n  the rejected records are in {kept}",)
                raise
            finally:
                workers.close()
                writer.close()
        finally:
            if pool is not None:  # failed before the workers took it
                stop_pool(pool)
            if early is not None and early.process.is_alive():  # failed while it ran
                early.drop()
            if gc_settings is not None:
                restore_collections(gc_settings)
    return manifest


def _render_into(
    tmp: Path,
    recipe: Recipe,
    contract: Contract,
    renderer: RowRenderer,
    files: list[tuple[InputSpec, Path]],
    spill: Spill,
    bar: Any,
    workers: Workers,
) -> dict[str, Any]:
    """Both passes into the temp folder; returns the manifest written there."""
    from jarvis import __version__

    try:
        with (tmp / REJECTS).open("wb") as rejects_out:
            state = pass_one(recipe, contract, renderer, files, workers, spill, rejects_out, bar)
        _check_option_tags(recipe, set(state.tags))
    finally:
        # Every process flushes its spill files after each task: pass 2 can read them now.
        if bar is not None:
            bar.render_finish()
    _check_rejects(recipe, state)
    plan = plan_splits(recipe, contract, state)
    enforce_composition(recipe, contract, state, plan)
    rag, retrieval = None, None
    if contract.retrieval is not None:
        rag, retrieval = retrieve_rows(tmp, recipe, contract, renderer, spill, state, plan)
    try:
        maps = Maps(spill.units, plan.split_of)
        has_rows = [sum(rows) > 0 for rows in plan.rows]
        if rag is None:
            written = workers.write(tmp, spill, maps, has_rows)
            with_block = plan.blocks
        else:  # rows re-rendered with their exemplars are in this process's temp file
            written, with_block = write_buckets(tmp, spill, maps, rag, contract.rag_field, has_rows)
    finally:
        if rag is not None:
            rag.close()
    shutil.rmtree(spill.folder)
    if retrieval is not None:
        written[EXEMPLARS] = {
            "sha256": sha256_file(tmp / EXEMPLARS), "rows": retrieval["exemplars"],
        }  # fmt: skip
    if state.reject_count:
        written[REJECTS] = {"sha256": sha256_file(tmp / REJECTS), "rows": state.reject_count}
    else:
        (tmp / REJECTS).unlink()
    manifest = build_manifest(recipe, contract, state, plan, written, __version__)
    if contract.rag_field is not None:
        shares = {
            name: share_of(with_block[s], sum(plan.records[s]))
            for s, name in enumerate(SPLITS)
            if sum(plan.records[s])
        }
        manifest["rag"] = {"field": contract.rag_field, "rows_with_block": shares}
    if retrieval is not None:
        manifest["retrieval"] = retrieval
    (tmp / MANIFEST).write_bytes(manifest_bytes(manifest))
    return manifest


def _keep_rejects(rejects: Path, out: Path) -> Path | None:
    """Move a failed run's rejects to `<out>.rejects.jsonl`; None when there are none.

    An existing file of that name is replaced only when it is a jarvis rejects file.
    """
    if not rejects.is_file() or rejects.stat().st_size == 0:
        return None
    dest = out.absolute().parent / f"{out.name}.{REJECTS}"
    if dest.exists():
        with dest.open("rb") as fh:
            first = fh.readline()
        try:
            entry = orjson.loads(first)
        except orjson.JSONDecodeError:
            entry = None
        if not (isinstance(entry, dict) and {"file", "line", "reason", "raw"} <= entry.keys()):
            return None
    os.replace(rejects, dest)
    return dest


def _progress_bar(total: int) -> Any:
    import click

    bar = click.progressbar(length=max(total, 1), label="rendering", file=sys.stderr)
    bar.render_progress()
    return bar


def _check_rejects(recipe: Recipe, state: PassOneState) -> None:
    invalid = state.reject_count - state.overlength
    if state.total == 0 or invalid / state.total <= recipe.max_reject_rate:
        return
    first = state.rejects[0]
    more = "\n".join(f"  {line}" for line in state.rejects[1:])
    raise InputError(
        f"{first}\n{more + chr(10) if more else ''}"
        f"  {invalid} of {state.total} records rejected ({invalid / state.total:.2%}), above "
        f"--max-reject-rate {recipe.max_reject_rate:g}"
    )
