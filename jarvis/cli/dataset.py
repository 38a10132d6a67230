"""`jarvis render-dataset`: parse the options into a `Recipe`, render, print the summary."""

from __future__ import annotations

from typing import Any

import click

from jarvis.cli.common import (
    SEED,
    Finite,
    Jobs,
    get_root,
    root_option,
)


@click.command("render-dataset")
@click.option("--contract", "contract_ref", help="Contract ref, e.g. reply@1.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="[TAG=]PATH",
    help="JSONL/JSON-array file or folder (.gz too); repeat; untagged = 'default'.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Output dataset folder.")
@click.option("--split", help="train,valid,test fractions. Default 0.9,0.05,0.05.")
@click.option("--seed", type=SEED, help="Seed of the split and shuffle hashes. Default 0.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["chat", "completions", "text"]),
    help="mlx-lm row format. Default chat.",
)
@click.option("--train-only", multiple=True, metavar="TAG", help="Put every TAG record in train.")
@click.option(
    "--repeat", multiple=True, metavar="TAG=N", help="Repeat TAG records N times in train."
)
@click.option(
    "--min-ratio",
    multiple=True,
    metavar="TAG=R",
    help="Fail when TAG is below share R of the train rows.",
)
@click.option(
    "--min-compliant",
    type=Finite(0.0, 1.0),
    help="Fail when the share of training targets passing every output check is below R.",
)
@click.option("--tokenizer", help="Model or tokenizer folder: count tokens as mlx-lm will.")
@click.option("--max-seq-length", type=click.IntRange(min=1), help="Default 2048 (mlx-lm's).")
@click.option(
    "--on-overlength",
    type=click.Choice(["fail", "drop"]),
    help="A row over --max-seq-length fails the run (default) or goes to rejects.",
)
@click.option(
    "--max-reject-rate", type=Finite(0.0, 1.0), help="Allowed share of invalid records. Default 0."
)
@click.option(
    "--min-split-rows",
    "--batch-size",
    "min_split_rows",
    type=click.IntRange(min=1),
    help="Every written split must hold at least this many rows (your training --batch-size: "
    "mlx-lm cannot batch fewer). Default 4. --batch-size is the old name.",
)
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False, exists=True),
    help="YAML file with the same settings; options given here override it.",
)
@click.option(
    "--jobs",
    "-j",
    type=Jobs(),
    help="Processes doing the work, this one included, or auto (the default): one per CPU, "
    "at most 8, once the first megabytes show the input is big enough to pay for them; 1 MB "
    "of input or less always runs in one. The output is byte-identical whatever the number.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No summary and no `wrote` line; warnings still go to stderr.",
)
@root_option
@click.pass_context
def render_dataset_cmd(ctx: click.Context, /, **opts: Any) -> None:
    """Render verified, composition-aware mlx-lm training data from one contract."""
    from pathlib import Path

    from jarvis.dataset import (
        Recipe,
        composition_warnings,
        format_summary,
        parse_assignments,
        render_dataset,
    )

    values: dict[str, Any] = {
        "contract": opts["contract_ref"],
        "inputs": list(opts["inputs"]) or None,
        "split": opts["split"],
        "seed": opts["seed"],
        "format": opts["fmt"],
        "train_only": list(opts["train_only"]) or None,
        "repeat": parse_assignments(opts["repeat"], "--repeat", int) or None,
        "min_ratio": parse_assignments(opts["min_ratio"], "--min-ratio", float) or None,
        "min_compliant": opts["min_compliant"],
        "tokenizer": opts["tokenizer"],
        "max_seq_length": opts["max_seq_length"],
        "on_overlength": opts["on_overlength"],
        "max_reject_rate": opts["max_reject_rate"],
        "min_split_rows": opts["min_split_rows"],
    }
    given = {k: v for k, v in values.items() if v is not None}
    if opts["recipe"]:
        recipe = Recipe.from_yaml(opts["recipe"], **given)
    else:
        for key, flag in (("contract", "--contract"), ("inputs", "--input")):
            if key not in given:
                raise click.UsageError(f"{flag} is required (or give --recipe)")
        recipe = Recipe.build(**given)
    out = opts["out"]
    if out is None:
        raise click.UsageError("--out is required")
    manifest = render_dataset(
        recipe,
        Path(out),
        force=opts["force"],
        root=get_root(ctx),
        progress=True,
        jobs=opts["jobs"] or "auto",
        one_thread=True,
    )
    if opts["quiet"]:
        for line in composition_warnings(manifest):  # -q silences all but the warnings
            click.echo(line, err=True)
    else:
        click.echo(format_summary(manifest))
        click.echo(f"wrote {out}")
