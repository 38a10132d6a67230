"""`jarvis train` and `jarvis train-config`: mlx-lm LoRA training bound to a rendered dataset.

Both refuse a dataset folder that is missing, empty, has no manifest, or was rendered with a
contract whose fingerprint differs from the contract on disk, before any model is loaded.
Training calls mlx-lm's pieces directly (mlx-lm-facts 5.4), stops on a NaN loss, and writes
the adapter atomically with a `jarvis` stamp in `adapter_config.json`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from jarvis.adapter import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    chat_template_sha256,
    config_sha256,
    fetch_model,
    make_stamp,
    model_config,
    model_id,
    resolve_model_dir,
    weights_sha256,
)
from jarvis.contract import Contract, load_contract
from jarvis.dataset import MANIFEST, load_manifest, manifest_root
from jarvis.errors import (
    ContractMismatchError,
    DatasetError,
    ModelError,
    TokenizationError,
    TrainingError,
)
from jarvis.files import atomic_write_text, sha256_file
from jarvis.outdir import atomic_dir, check_output

FineTuneType = Literal["lora", "dora", "full"]


@dataclass(frozen=True)
class TrainReport:
    """One loss report of a training run, as mlx-lm's callback gives it."""

    kind: Literal["train", "val"]
    iteration: int
    loss: float
    iters: int

    def line(self) -> str:
        """`iter 10: train loss 6.296`."""
        return f"iter {self.iteration}: {self.kind} loss {self.loss:.3f}"


Progress = Callable[[TrainReport], None]


@dataclass(frozen=True)
class TrainOptions:
    """Training hyper-parameters (the `jarvis train` options), mlx-lm's names and defaults.

    `num_layers=None` means every layer up to 16 (mlx-lm's default of 16 fails on smaller
    models); `mask_prompt=None` means on for chat/completions data, off for text data.
    """

    iters: int = 100
    batch_size: int = 4
    learning_rate: float = 1e-5
    num_layers: int | None = None
    fine_tune_type: FineTuneType = "lora"
    mask_prompt: bool | None = None
    seed: int = 0
    rank: int = 8
    scale: float = 20.0
    dropout: float = 0.0
    max_seq_length: int = 2048
    steps_per_report: int = 10
    steps_per_eval: int = 200
    save_every: int = 100
    val_batches: int = 25


@dataclass(frozen=True)
class Dataset:
    """A checked dataset folder: its manifest, the contract it matches, and the manifest hash."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    contract: Contract
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """The mlx-lm data format: "chat", "completions" or "text"."""
        return str(self.manifest.get("format", "chat"))


@dataclass(frozen=True)
class TrainResult:
    """What `train` did.

    Attributes:
        adapter_path: the adapter folder written.
        stamp: the `jarvis` block written into `adapter_config.json`.
        losses: `(iteration, train_loss)` per report.
        val_losses: `(iteration, val_loss)` per evaluation.
        seconds: wall time of the training loop, model load included.
    """

    adapter_path: Path
    stamp: dict[str, Any]
    losses: list[tuple[int, float]]
    val_losses: list[tuple[int, float]]
    seconds: float


def load_dataset(
    dataset: str | os.PathLike[str],
    *,
    contract: str | Contract | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Check a rendered dataset folder before anything is trained on it.

    Args:
        dataset: the folder `jarvis render-dataset` wrote, or its `load_dataset` result.
        contract: the contract expected (default: the one the manifest names).
        root: contract root (default `$JARVIS_ROOT`, else the bundled root).

    Returns:
        The checked `Dataset`.

    Raises:
        DatasetError: missing or empty folder, no or malformed manifest, missing or empty
            train.jsonl, a file changed since rendering.
        ContractMismatchError: the manifest's contract or fingerprint differs from `contract`
            (or from the contract of that name on disk).
    """
    folder = Path(dataset).absolute()
    manifest = load_manifest(folder)
    info = manifest["contract"]  # load_manifest checked its name, version and fingerprint
    ref = str(info.get("ref") or f"{info['name']}@{info['version']}")
    expected = load_contract(
        contract if contract is not None else ref, root=manifest_root(manifest, root)
    )
    if expected.ref != ref or expected.fingerprint != info["fingerprint"]:
        raise ContractMismatchError(
            f"{folder} was rendered with {ref} (fingerprint {str(info['fingerprint'])[:12]}) "
            f"but the contract is {expected.ref} (fingerprint {expected.short_fingerprint}); "
            "re-render it with `jarvis render-dataset`"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or "train.jsonl" not in files:
        raise DatasetError(f"{folder / MANIFEST}: malformed manifest (no files.train.jsonl)")
    rows: dict[str, int] = {}
    for name, entry in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            raise DatasetError(f"{path}: missing or empty")
        if isinstance(entry, dict) and entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            raise DatasetError(
                f"{path}: changed since it was rendered (sha256 differs from the manifest)"
            )
        rows[name] = int(entry.get("rows", 0)) if isinstance(entry, dict) else 0
    return Dataset(folder, manifest, sha256_file(folder / MANIFEST), expected, rows)


def check_trainable(ds: Dataset, options: TrainOptions) -> None:
    """Fail early where mlx-lm would fail, or silently truncate, after loading the model.

    Raises:
        DatasetError: a split is smaller than the batch size, or text data with --mask-prompt.
        TokenizationError: the manifest's longest row is over `options.max_seq_length`.
    """
    for name in ("train.jsonl", "valid.jsonl"):
        n = ds.rows.get(name)
        if n is not None and 0 < n < options.batch_size:
            raise DatasetError(
                f"{ds.path / name}: {n} rows, fewer than --batch-size {options.batch_size}"
            )
    if ds.format == "text" and options.mask_prompt:
        raise DatasetError(f"{ds.path}: --mask-prompt needs chat or completions data, not text")
    # render-dataset measured every row with --tokenizer; mlx-lm would cut longer ones silently.
    splits = ds.manifest.get("splits")
    for name, info in splits.items() if isinstance(splits, dict) else ():
        tokens = info.get("tokens") if isinstance(info, dict) else None
        longest = tokens.get("max") if isinstance(tokens, dict) else None
        if isinstance(longest, int) and longest > options.max_seq_length:
            tokenizer = (ds.manifest.get("recipe") or {}).get("tokenizer")
            raise TokenizationError(
                f"{ds.path / name}.jsonl: its longest row has {longest} tokens (measured with "
                f"{tokenizer}), more than --max-seq-length {options.max_seq_length}; mlx-lm "
                "would silently cut its answer and EOS (raise --max-seq-length, or re-render "
                "with this --max-seq-length)"
            )


def check_row_lengths(
    ds: Dataset, tokenizer: Any, options: TrainOptions, *, enable_thinking: bool | None
) -> int:
    """Tokenize every train and valid row as mlx-lm will and refuse any over the limit.

    A dataset rendered without `--tokenizer` has no token stats; mlx-lm would cut a longer
    row's answer and EOS without a word.

    Returns:
        The longest row's token count.

    Raises:
        TokenizationError: a row is over `options.max_seq_length` (names file:line).
    """
    from jarvis.chat import mlx_row_tokens
    from jarvis.files import read_jsonl

    longest = 0
    for name in ("train.jsonl", "valid.jsonl"):
        path = ds.path / name
        if not path.is_file():
            continue
        for number, _, row in read_jsonl(path):
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: not a JSON row")
            n = len(mlx_row_tokens(tokenizer, row, enable_thinking=enable_thinking))
            if n > options.max_seq_length:
                raise TokenizationError(
                    f"{path}:{number}: row has {n} tokens with this model's tokenizer, more "
                    f"than --max-seq-length {options.max_seq_length}; mlx-lm would silently "
                    "cut its answer and EOS (raise --max-seq-length, or re-render with "
                    "--tokenizer and --on-overlength drop)"
                )
            longest = max(longest, n)
    return longest


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(value.rstrip("/")).name or value).strip("-").lower()


def _layer_count(model_dir: Path | None) -> int | None:
    config = model_config(model_dir)
    layers = config.get("num_hidden_layers", config.get("text_config", {}).get("num_hidden_layers"))
    return int(layers) if layers is not None else None


def base_identity(model: str) -> tuple[str, str | None, str | None, str | None]:
    """Return `(recorded id, config, chat template, weights sha256)` of a base model, no mlx.

    The hashes are None when the model is a hub id not in the local cache.
    """
    folder = resolve_model_dir(model)
    if folder is None:
        return model_id(model), None, None, None
    from jarvis.chat import load_tokenizer

    template = chat_template_sha256(load_tokenizer(folder))
    return model_id(model), config_sha256(folder), template, weights_sha256(folder)


def mlx_config(
    ds: Dataset,
    model: str,
    adapter_path: str | os.PathLike[str],
    options: TrainOptions,
    stamp: Mapping[str, Any],
    *,
    layers: int | None = None,
) -> dict[str, Any]:
    """Return the `mlx_lm.lora` config for one run (YAML keys; also the programmatic args).

    `lora_parameters` is always complete (mlx-lm replaces, not merges, a partial one), paths
    are absolute, and the `jarvis` stamp rides along into `adapter_config.json`.
    """
    num_layers = options.num_layers
    if num_layers is None:
        num_layers = min(16, layers) if layers is not None else 16
    mask = options.mask_prompt if options.mask_prompt is not None else ds.format != "text"
    return {
        "model": model,
        "train": True,
        "data": str(ds.path),
        "adapter_path": str(Path(adapter_path).absolute()),
        "fine_tune_type": options.fine_tune_type,
        "iters": options.iters,
        "batch_size": options.batch_size,
        "learning_rate": options.learning_rate,
        "num_layers": num_layers,
        "mask_prompt": mask,
        "seed": options.seed,
        "max_seq_length": options.max_seq_length,
        "steps_per_report": options.steps_per_report,
        "steps_per_eval": options.steps_per_eval,
        "save_every": options.save_every,
        "val_batches": options.val_batches,
        "lora_parameters": {
            "rank": options.rank,
            "scale": options.scale,
            "dropout": options.dropout,
        },
        "jarvis": dict(stamp),
    }


def _nan_message(kind: str, loss: float, it: int) -> str:
    return (
        f"{kind} loss is {loss} at iteration {it}; stopped, no adapter was saved "
        "(rows with no trainable tokens, e.g. prompts longer than --max-seq-length, "
        "or a learning rate that is too high)"
    )


class _Monitor:
    """mlx-lm `TrainingCallback`: records losses, reports progress, aborts on NaN."""

    def __init__(self, progress: Progress | None, iters: int) -> None:
        self.losses: list[tuple[int, float]] = []
        self.val_losses: list[tuple[int, float]] = []
        self._progress = progress
        self._iters = iters
        self._stdout = sys.stdout  # mlx-lm's console is redirected to train.log; we are not

    def progress(self, kind: Literal["train", "val"], it: int, loss: float) -> None:
        if self._progress is not None:
            with contextlib.redirect_stdout(self._stdout):
                self._progress(TrainReport(kind, it, loss, self._iters))

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        it, loss = int(info["iteration"]), float(info["train_loss"])
        self.losses.append((it, loss))
        if not math.isfinite(loss):
            # mlx-lm keeps going and saves a NaN adapter; stop before anything is kept.
            raise TrainingError(_nan_message("training", loss, it))
        self.progress("train", it, loss)

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        it, loss = int(info["iteration"]), float(info["val_loss"])
        self.val_losses.append((it, loss))
        if not math.isfinite(loss):
            raise TrainingError(_nan_message("validation", loss, it))
        self.progress("val", it, loss)


def train(
    dataset: str | os.PathLike[str] | Dataset,
    model: str,
    adapter_path: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    contract: str | Contract | None = None,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train an mlx-lm adapter on a rendered dataset and stamp it with the contract.

    Args:
        dataset: the folder `jarvis render-dataset` wrote, or its `load_dataset` result.
        model: a base model folder or hub id (in the local cache when offline).
        adapter_path: the adapter folder to write (replaced atomically on success).
        options: hyper-parameters (default `TrainOptions()`).
        contract: the contract expected (default: the one the dataset's manifest names).
        root: contract root.
        force: replace an existing adapter folder.
        progress: called with a `TrainReport` per loss report (mlx-lm reports every
            `steps_per_report` iterations and validates every `steps_per_eval`).

    Returns:
        A `TrainResult`; mlx-lm's own console output is kept in `<adapter>/train.log`.

    Raises:
        DatasetError: the dataset is missing, empty, unmanifested or too small.
        ContractMismatchError: the dataset was rendered with another contract fingerprint.
        TokenizationError: the manifest's token stats show a row over `max_seq_length`.
        ModelError: the base model cannot be found or loaded.
        TrainingError: the loss became NaN, or mlx-lm failed while training.
        OutputExistsError: the adapter folder exists and `force` is false.
    """
    import time

    options = options or TrainOptions()
    if isinstance(dataset, Dataset):
        ds = dataset  # already loaded and checked against its contract by the caller
    else:
        ds = load_dataset(dataset, contract=contract, root=root)
    check_trainable(ds, options)
    folder = fetch_model(model)
    reads = [ds.path, folder, ds.contract.root]
    dest = check_output(adapter_path, kind="adapter", force=force, inputs=reads)

    start = time.perf_counter()
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import mlx.core as mx

    from jarvis.imports import transformers_scanned_once

    with transformers_scanned_once():
        from mlx_lm import load, lora
        from mlx_lm.tuner import datasets as mlx_datasets

    try:
        result: Any = load(str(folder))
    except Exception as exc:  # mlx-lm raises plain ValueError/FileNotFoundError
        raise ModelError(f"cannot load {model}: {type(exc).__name__}: {exc}") from exc
    from jarvis.chat import has_thinking

    base, tokenizer = result
    check_row_lengths(ds, tokenizer, options, enable_thinking=has_thinking(tokenizer))

    stamp = make_stamp(
        ds.contract,
        base_model=model_id(model),
        base_config_sha256=config_sha256(folder),
        base_weights_sha256=weights_sha256(folder),
        chat_template_sha=chat_template_sha256(tokenizer),
        enable_thinking=has_thinking(tokenizer),
        manifest_sha256=ds.manifest_sha256,
        dataset=str(ds.path),
        manifest=ds.manifest,
    )
    monitor = _Monitor(progress, options.iters)
    log = io.StringIO()
    with atomic_dir(dest, kind="adapter", force=force, inputs=reads) as tmp:
        config = mlx_config(ds, model, tmp, options, stamp, layers=len(base.layers))
        args = types.SimpleNamespace(**{**lora.CONFIG_DEFAULTS, **config})
        try:
            # mlx_lm.lora's run() seeds numpy (batch order) and train_model seeds mlx (LoRA
            # init, dropout); calling train_model directly must seed numpy the same way.
            import numpy as np

            np.random.seed(options.seed)
            with contextlib.redirect_stdout(log):
                sets: Any = mlx_datasets.load_dataset(args, tokenizer)
                callback: Any = monitor
                lora.train_model(args, base, sets[0], sets[1], callback)
        except TrainingError:
            raise
        except Exception as exc:  # mlx-lm's errors surface as ValueError/KeyError/IndexError
            raise TrainingError(
                f"mlx-lm failed while training: {type(exc).__name__}: {exc}"
            ) from exc
        weights: Any = mx.load(str(tmp / WEIGHTS_FILE))
        bad = [k for k, v in weights.items() if not mx.all(mx.isfinite(v)).item()]
        if bad:
            raise TrainingError(f"the trained adapter has non-finite weights ({bad[0]}); not saved")
        # mlx-lm recorded the temp folder; record where the adapter really lives.
        saved = json.loads((tmp / CONFIG_FILE).read_text(encoding="utf-8"))
        saved["adapter_path"] = str(dest)
        saved["jarvis"] = stamp
        atomic_write_text(tmp / CONFIG_FILE, json.dumps(saved, indent=4, sort_keys=True) + "\n")
        (tmp / "train.log").write_text(_strip_ansi(log.getvalue()), encoding="utf-8")
    return TrainResult(dest, stamp, monitor.losses, monitor.val_losses, time.perf_counter() - start)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


# The first line of every config `train-config` writes: `--force` replaces only such files.
CONFIG_HEADER = "# Written by `jarvis train-config`."


def write_configs(
    configs: Sequence[ConfigFile], paths: Sequence[Path], *, force: bool = False
) -> list[Path]:
    """Write each config to its path, atomically, after checking every path first.

    Returns:
        The paths written.

    Raises:
        OutputExistsError: a path exists and `force` is false, or two configs share a path.
        OutputRefusedError: `force` would replace a file `train-config` did not write.
    """
    from jarvis.errors import OutputExistsError, OutputRefusedError

    seen: dict[Path, ConfigFile] = {}
    for config, path in zip(configs, paths, strict=True):
        other = seen.get(path.absolute())
        if other is not None:
            raise OutputExistsError(
                f"{path}: both {other.dataset} and {config.dataset} would write it (their "
                "folders share a name); rename one dataset folder"
            )
        seen[path.absolute()] = config
        if path.is_dir():
            raise OutputRefusedError(f"{path}: is a folder, not a config file")
        if path.exists():
            if not force:
                raise OutputExistsError(f"{path} exists; pass --force to replace it")
            with path.open("rb") as fh:
                first = fh.readline()
            if not first.startswith(CONFIG_HEADER.encode()):
                raise OutputRefusedError(
                    f"{path}: --force replaces only a config `jarvis train-config` wrote; "
                    "this file was not, so nothing was touched"
                )
    for config, path in zip(configs, paths, strict=True):
        atomic_write_text(path, config.to_yaml())
    return list(paths)


@dataclass(frozen=True)
class ConfigFile:
    """One written `mlx_lm.lora` YAML config."""

    name: str
    model: str
    dataset: Path
    adapter_path: Path
    config: dict[str, Any]

    def to_yaml(self) -> str:
        """Return the YAML text (with a header comment saying how to run it)."""
        header = (
            f"{CONFIG_HEADER} Run it with:\n"
            "#   mlx_lm.lora -c <this file>\n"
            "# or train with the same settings and checks: `jarvis train`.\n"
        )
        body = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True)
        return header + body


def train_configs(
    datasets: Sequence[str | os.PathLike[str]],
    models: Sequence[str],
    adapter_path: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    contract: str | Contract | None = None,
    root: str | os.PathLike[str] | None = None,
) -> list[ConfigFile]:
    """Build the `mlx_lm.lora` config of every (model, dataset) pair, without training.

    Every dataset is checked first, so one empty variant fails the whole matrix before a
    single file is written (the post-mortem's config generator pointed at an empty folder).

    Args:
        datasets: rendered dataset folders (variants).
        models: base model folders or hub ids.
        adapter_path: the adapter folder for a single pair; for a matrix, the parent folder
            of one `<model>_<dataset>` adapter folder per pair.
        options: hyper-parameters shared by every config.
        contract: the contract every dataset must match (default: each manifest's own).
        root: contract root.

    Returns:
        One `ConfigFile` per pair, models outer, datasets inner.

    Raises:
        DatasetError: a dataset is missing, empty, unmanifested or too small.
        ContractMismatchError: a dataset's manifest fingerprint differs from the contract.
        TokenizationError: a manifest's token stats show a row over `max_seq_length`.
    """
    options = options or TrainOptions()
    checked = [load_dataset(d, contract=contract, root=root) for d in datasets]
    for ds in checked:
        check_trainable(ds, options)
    single = len(checked) * len(models) == 1
    out: list[ConfigFile] = []
    for model in models:
        recorded, config_sha, template_sha, weights_sha = base_identity(model)
        layers = _layer_count(resolve_model_dir(model))
        for ds in checked:
            name = f"{_slug(model)}_{_slug(str(ds.path))}"
            dest = Path(adapter_path) if single else Path(adapter_path) / name
            stamp = make_stamp(
                ds.contract,
                base_model=recorded,
                base_config_sha256=config_sha,
                base_weights_sha256=weights_sha,
                chat_template_sha=template_sha,
                enable_thinking=None,  # known once mlx-lm loads the tokenizer
                manifest_sha256=ds.manifest_sha256,
                dataset=str(ds.path),
                manifest=ds.manifest,
            )
            config = mlx_config(ds, recorded, dest, options, stamp, layers=layers)
            out.append(ConfigFile(name, recorded, ds.path, Path(config["adapter_path"]), config))
    return out
