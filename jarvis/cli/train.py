"""`jarvis train` and `jarvis train-config`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from jarvis.cli.common import (
    SEED,
    Finite,
    dataset_option,
    get_root,
    root_option,
)

F = TypeVar("F", bound=Callable[..., Any])


def _train_options(fn: F) -> F:
    """The hyper-parameter options `train` and `train-config` share (mlx-lm's names)."""
    options = [
        click.option("--iters", default=100, show_default=True, type=click.IntRange(min=1)),
        click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1)),
        click.option(
            "--learning-rate", default=1e-5, show_default=True, type=Finite(0.0, min_open=True)
        ),
        click.option(
            "--num-layers",
            type=int,
            help="Blocks to adapt, from the top (default: all, at most 16; -1: all).",
        ),
        click.option(
            "--fine-tune-type",
            default="lora",
            show_default=True,
            type=click.Choice(["lora", "dora", "full"]),
        ),
        click.option(
            "--mask-prompt/--no-mask-prompt",
            default=None,
            help="Train on the assistant reply only (default: on for chat data).",
        ),
        click.option("--seed", default=0, show_default=True, type=SEED),
        click.option("--rank", default=8, show_default=True, type=click.IntRange(min=1)),
        click.option("--scale", default=20.0, show_default=True, type=Finite()),
        click.option(
            "--max-seq-length", default=2048, show_default=True, type=click.IntRange(min=8)
        ),
        click.option(
            "--contract",
            "contract_ref",
            help="Contract the dataset must match (default: the one its manifest names).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _options_from(kwargs: dict[str, Any]) -> Any:
    from jarvis.train import TrainOptions

    return TrainOptions(
        **{k: kwargs.pop(k) for k in list(kwargs) if k in TrainOptions.__dataclass_fields__}
    )


class _TrainBar:
    """A progress bar on stderr (iteration, last losses, ETA) for a terminal."""

    def __init__(self, iters: int) -> None:
        self.status = "validating"  # mlx-lm validates before the first step
        self.bar: Any = click.progressbar(
            length=iters,
            label="training",
            file=sys.stderr,
            show_eta=True,
            show_pos=True,
            item_show_func=lambda _: self.status,
        )
        self.train = self.val = ""
        self.done = 0
        self.bar.render_progress()

    def __call__(self, report: Any) -> None:
        if report.kind == "train":
            self.train = f"train loss {report.loss:.3f}"
        else:
            self.val = f"val loss {report.loss:.3f}"
        self.status = "  ".join(x for x in (self.train, self.val) if x)
        step = report.iteration - self.done
        self.done = report.iteration
        self.bar.update(max(step, 0), None)

    def close(self) -> None:
        self.bar.render_finish()


def _adapter_out(text: str) -> Callable[[F], F]:
    """`--adapter DIR` (old name `--adapter-path`) of train and train-config."""
    return click.option(
        "--adapter",
        "--adapter-path",
        "adapter_path",
        required=True,
        type=click.Path(file_okay=False),
        help=text,
    )


@click.command("train")
@dataset_option
@click.option("--model", required=True, help="Base model folder or hub id (cached when offline).")
@_adapter_out("Adapter folder to write (replaced only when training succeeds).")
@_train_options
@click.option("--force", is_flag=True, help="Replace an existing adapter folder.")
@root_option
@click.pass_context
def train_cmd(
    ctx: click.Context,
    /,
    dataset_dir: str,
    model: str,
    adapter_path: str,
    contract_ref: str | None,
    force: bool,
    **kwargs: Any,
) -> None:
    """Train an mlx-lm LoRA adapter on a rendered dataset and stamp it with the contract.

    The dataset is checked before any model loads (missing, empty, no manifest, fingerprint
    not the contract's). Training stops with exit 10 if the loss becomes NaN.
    """
    from jarvis.train import check_trainable, load_dataset, train

    options = _options_from(kwargs)
    ds = load_dataset(dataset_dir, contract=contract_ref, root=get_root(ctx))
    check_trainable(ds, options)
    splits = ("train.jsonl", "valid.jsonl", "test.jsonl")
    rows = ", ".join(f"{name} {ds.rows[name]}" for name in splits if name in ds.rows)
    click.echo(f"dataset: {ds.path} ({ds.contract.ref}, {ds.format}; {rows})")
    click.echo(f"training {model}: {options.fine_tune_type}, {options.iters} iters")
    bar = _TrainBar(options.iters) if sys.stderr.isatty() else None
    try:
        result = train(
            ds,
            model,
            adapter_path,
            options,
            contract=ds.contract,
            force=force,
            progress=bar if bar is not None else lambda r: click.echo(f"  {r.line()}"),
        )
    finally:
        if bar is not None:
            bar.close()
    stamp = result.stamp
    click.echo(f"adapter: {result.adapter_path} ({result.seconds:.1f}s; log in train.log)")
    click.echo(
        f"stamp: {stamp['ref']} fingerprint {stamp['fingerprint'][:12]}, "
        f"base {stamp['base_model']}, chat template {stamp['chat_template_sha256'][:12]}"
    )


@click.command("train-config")
@click.option(
    "--dataset",
    "datasets",
    required=True,
    multiple=True,
    type=click.Path(file_okay=False),
    help="A rendered dataset folder; repeat for a matrix of dataset variants.",
)
@click.option(
    "--model", "models", required=True, multiple=True, help="Base model; repeat for a matrix."
)
@_adapter_out("Adapter folder; for a matrix, the parent of one <model>_<dataset> folder per run.")
@click.option(
    "--out",
    default="-",
    show_default=True,
    help="YAML file ('-' for stdout); for a matrix, a folder of <model>_<dataset>.yaml files.",
)
@_train_options
@click.option("--force", is_flag=True, help="Overwrite existing config files.")
@root_option
@click.pass_context
def train_config_cmd(
    ctx: click.Context,
    /,
    datasets: tuple[str, ...],
    models: tuple[str, ...],
    adapter_path: str,
    out: str,
    contract_ref: str | None,
    force: bool,
    **kwargs: Any,
) -> None:
    """Write the equivalent `mlx_lm.lora -c` YAML without training (one per model x dataset).

    Every dataset is checked first, exactly as `jarvis train` does, so no config is written
    for a folder that is missing, empty or rendered with another contract.
    """
    from jarvis.train import train_configs, write_configs

    options = _options_from(kwargs)
    configs = train_configs(
        datasets, models, adapter_path, options, contract=contract_ref, root=get_root(ctx)
    )
    if len(configs) == 1 and out == "-":
        click.echo(configs[0].to_yaml(), nl=False)
        return
    if len(configs) > 1 and out == "-":
        raise click.UsageError("a matrix needs --out DIR (one YAML file per model x dataset)")
    paths = [Path(out)] if len(configs) == 1 else [Path(out) / f"{c.name}.yaml" for c in configs]
    written = write_configs(configs, paths, force=force)
    for config, path in zip(configs, written, strict=True):
        click.echo(f"wrote {path}  ({config.model} on {config.dataset})")
