"""`jarvis verify`, `jarvis diff` and `jarvis eval`: what a dataset, contract or adapter is."""

from __future__ import annotations

import sys

import click

from jarvis.cli.common import (
    SEED,
    Finite,
    dataset_option,
    echo_json,
    get_root,
    root_option,
)


@click.command("verify")
@click.argument("dataset_dir", required=False, type=click.Path(file_okay=False))
@click.option(
    "--adapter", type=click.Path(file_okay=False), help="Check this adapter's jarvis stamp."
)
@click.option(
    "--tokenizer", help="Model or tokenizer folder: runtime-prompt tokens must prefix each row's."
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    help="Re-render N records chosen at random with a fixed seed (default: all; "
    "eval --limit takes the first N instead).",
)
@click.option(
    "--chat-template",
    "chat_template",
    help="Audit a vendor chat template: .jinja file, tokenizer_config.json or model folder.",
)
@click.option(
    "--contract",
    "contract_ref",
    help="The contract version you serve with: the dataset must have been rendered with it "
    "(default: the latest version of the dataset's contract); also the audit's contract "
    "(default: the dataset's, else the latest reply).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["chat", "text"]),
    help="Row format the audit assumes (default: the dataset's, else chat).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@root_option
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    dataset_dir: str | None,
    adapter: str | None,
    tokenizer: str | None,
    sample: int | None,
    chat_template: str | None,
    contract_ref: str | None,
    fmt: str | None,
    as_json: bool,
) -> None:
    """Verify a rendered dataset (and adapter, tokenizer) or audit a vendor chat template.

    Exit 0 only when every check passes; otherwise each failed check is listed (exit 1).
    """
    from jarvis.verify import run_verify

    if dataset_dir is None and chat_template is None:
        raise click.UsageError("give a DATASET_DIR, --chat-template, or both")
    result = run_verify(
        dataset_dir,
        adapter=adapter,
        tokenizer=tokenizer,
        sample=sample,
        chat_template=chat_template,
        contract=contract_ref,
        fmt=fmt,
        root=get_root(ctx),
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        for line in result.lines():
            click.echo(line)
    result.raise_for_failure()


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option(
    "--chat-template",
    "chat_template",
    help="Render the final string through this "
    "chat template (.jinja, tokenizer_config.json or model folder) instead of ChatML.",
)
@click.option(
    "--show",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show at most N user-content and N chat-string diffs.",
)
@root_option
@click.pass_context
def diff_cmd(ctx: click.Context, a: str, b: str, chat_template: str | None, show: int) -> None:
    """Render the same inputs with A and B (contract refs or dataset folders) and diff them.

    Prints a unified diff of the system prompt, the user content and the final chat string
    (coloured on a terminal); exit 1 when they differ.
    """
    from jarvis.diff import diff_sides, load_side, print_report

    template = None
    if chat_template is not None:
        from jarvis.audit import load_chat_template

        template = load_chat_template(chat_template)
    root = get_root(ctx)
    report = diff_sides(
        load_side(a, root=root), load_side(b, root=root), template=template, show=show
    )
    print_report(report)


@click.command("eval")
@dataset_option
@click.option(
    "--split", default="test", show_default=True, type=click.Choice(["train", "valid", "test"])
)
@click.option(
    "--model", help="Base model folder or hub id. Default: the base the adapter's stamp names."
)
@click.option("--adapter", type=click.Path(file_okay=False), help="Adapter folder to evaluate.")
@click.option("--baseline", is_flag=True, help="Also run the base model without the adapter.")
@click.option(
    "--limit", type=click.IntRange(min=1), help="Evaluate the first N records only (file order)."
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    help="Evaluate N records chosen at random with a fixed seed (as verify --sample).",
)
@click.option(
    "--out",
    "out_dir",
    default="eval-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Report folder.",
)
@click.option("--max-tokens", type=click.IntRange(min=1), help="Default: the contract's.")
@click.option(
    "--temperature", "--temp", "temperature", type=Finite(min=0.0), default=0.0,
    show_default=True, help="0 is greedy: the same scores on every run.",
)  # fmt: skip
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the sampler.")
@click.option("--force", is_flag=True, help="Replace an existing report folder.")
@click.option("--allow-mismatch", is_flag=True, help="Load an adapter whose stamp mismatches.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json's content.")
@root_option
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    dataset_dir: str,
    split: str,
    model: str | None,
    adapter: str | None,
    baseline: bool,
    limit: int | None,
    sample: int | None,
    out_dir: str,
    max_tokens: int | None,
    temperature: float,
    seed: int,
    force: bool,
    allow_mismatch: bool,
    as_json: bool,
) -> None:
    """Generate a reply per record and score checks, length and exact match, per tag.

    Writes report.json, report.md and comparison.png to --out.
    """
    from jarvis.evaluate import run_eval

    report = run_eval(
        dataset_dir,
        split=split,
        model=model,
        adapter=adapter,
        baseline=baseline,
        limit=limit,
        sample=sample,
        out=out_dir,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        force=force,
        allow_mismatch=allow_mismatch,
        root=get_root(ctx),
        progress=sys.stderr.isatty(),
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        for line in report.lines():
            click.echo(line)
