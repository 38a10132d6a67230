"""The `jarvis` command line: parse options, call library functions, print results.

Logic lives in the library modules. `JarvisError` is caught in one place (`JarvisGroup`)
and turned into `error: <message>` on stderr plus the class's exit code. mlx is imported
only inside the commands that run a model.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from jarvis.errors import EXIT_CODES, INTERNAL_ERROR, JarvisError

F = TypeVar("F", bound=Callable[..., Any])


class Finite(click.FloatRange):
    """A float range that also refuses NaN and infinity (click's `FloatRange` lets NaN pass)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


# Seeds reach numpy and mlx, which take at most 32 and 64 bits: one range for every command.
SEED = click.IntRange(0, 2**32 - 1)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


class JarvisGroup(click.Group):
    """A click group that maps every `JarvisError` to its exit code, in one place.

    Ctrl-C exits 130 and SIGTERM 143 (128 + the signal), after the `finally` blocks below
    have removed temp folders and stopped worker processes; never a traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JarvisError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted (Ctrl-C); temp files removed", err=True)
            ctx.exit(130)
        except Terminated:
            click.echo("error: terminated (SIGTERM); temp files removed", err=True)
            ctx.exit(143)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            # Every expected failure is a JarvisError; anything else is a bug. Say so in one
            # line (outputs are already safe: atomic_dir cleaned up), the traceback on request.
            if os.environ.get("JARVIS_DEBUG"):
                raise
            click.echo(
                f"error: internal error (a bug in jarvis, please report it): "
                f"{type(exc).__name__}: {exc}; set JARVIS_DEBUG=1 for the traceback",
                err=True,
            )
            ctx.exit(INTERNAL_ERROR)


def root_option(fn: F) -> F:
    """`--root DIR` on a command; falls back to the group's `--root`, then `$JARVIS_ROOT`."""

    def store(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            ctx.ensure_object(dict)["root"] = value
        return value

    return click.option(
        "--root",
        type=click.Path(file_okay=False),
        expose_value=False,
        callback=store,
        is_eager=True,
        help="Contract root (holds contracts/, prompts/, contracts.lock). Default: $JARVIS_ROOT, "
        "else the bundled root.",
    )(fn)


def get_root(ctx: click.Context) -> str | None:
    """Return the `--root` given on the command or any parent group, if any."""
    while ctx is not None:
        if isinstance(ctx.obj, dict) and ctx.obj.get("root"):
            return str(ctx.obj["root"])
        ctx = ctx.parent  # type: ignore[assignment]
    return None


# `--dataset DIR` of train and eval: a folder that `jarvis render-dataset` wrote.
dataset_option = click.option(
    "--dataset",
    "dataset_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="A dataset folder written by render-dataset.",
)


def read_text_input(path: str) -> str:
    """Read a UTF-8 text file, or standard input for '-', as bytes decoded strictly.

    Raises:
        InputError: unreadable, or not UTF-8 (names the file and the byte offset).
    """
    from jarvis.errors import InputError

    name = "<stdin>" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8: {exc.reason} at byte {exc.start}") from exc


def echo_json(value: Any) -> None:
    """Print one JSON object on stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


# "\b" stops click from re-wrapping the table.
EPILOG = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>2}  {text}" for code, text in EXIT_CODES.items()
)


@click.group(
    cls=JarvisGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="jarvis")
@root_option
def cli() -> None:
    """One versioned prompt contract for training data and runtime prompts (mlx-lm LoRA)."""


def main() -> None:
    """Console-script entry point."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    cli(prog_name="jarvis")


# --- contract commands -------------------------------------------------------------------


@cli.group()
def contract() -> None:
    """List, show, lock and check prompt contracts."""


@contract.command("list")
@root_option
@click.pass_context
def contract_list(ctx: click.Context) -> None:
    """List every contract version with its short fingerprint."""
    from jarvis.contract import load_all, read_lock, resolve_root

    root = resolve_root(get_root(ctx))
    lock = read_lock(root)
    contracts = load_all(root, enforce_lock=False)
    click.echo(f"root: {root}")
    rows = [("CONTRACT", "FINGERPRINT", "LOCK", "SCHEMA", "DESCRIPTION")]
    for c in contracts:
        entry = lock.get(c.ref)
        state = (
            "-" if entry is None else ("ok" if entry["fingerprint"] == c.fingerprint else "CHANGED")
        )
        rows.append((c.ref, c.short_fingerprint, state, c.schema.__name__, c.spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])


@contract.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@root_option
@click.pass_context
def contract_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one contract version: spec, parts and their hashes, and the system prompt."""
    from jarvis.contract import load_contract

    c = load_contract(ref, root=get_root(ctx), enforce_lock=False)
    info = {
        "contract": c.ref,
        "fingerprint": c.fingerprint,
        "locked": c.locked,
        "root": str(c.root),
        "spec": c.spec.model_dump(mode="json", by_alias=True),
        "parts": c.parts,
        "system_prompt": c.system_prompt,
    }
    if as_json:
        echo_json(info)
        return
    click.echo(f"{c.ref}  fingerprint {c.fingerprint}  locked: {'yes' if c.locked else 'no'}")
    click.echo(f"schema: {c.schema.__name__}   group key: {c.group_key or '-'}")
    click.echo(f"parameters: {json.dumps(c.parameters, ensure_ascii=False)}")
    click.echo(f"generation: {c.spec.generation.model_dump_json()}")
    click.echo(f"checks: {json.dumps(c.spec.checks)}")
    click.echo("parts:")
    for part, digest in c.parts.items():
        click.echo(f"  {digest[:12]}  {part}")
    click.echo("system prompt:")
    for line in c.system_prompt.splitlines():
        click.echo(f"  | {line}")


@contract.command("lock")
@root_option
@click.pass_context
def contract_lock(ctx: click.Context) -> None:
    """Lock every new contract version; refuse to rewrite a locked one."""
    from jarvis.lock import write_lock

    added = write_lock(get_root(ctx))
    if added:
        for ref in added:
            click.echo(f"locked {ref}")
    else:
        click.echo("nothing to lock: every version is locked and unchanged")


@contract.command("bump")
@click.argument("name")
@root_option
@click.pass_context
def contract_bump(ctx: click.Context, name: str) -> None:
    """Start NAME's next version as a copy of its latest (templates and spec entry)."""
    from jarvis.lock import bump_version

    old, new = bump_version(name, get_root(ctx))
    version = new.partition("@")[2]
    click.echo(
        f"created {new} from {old}: prompts/{name}/v{version}/ and "
        f"contracts/{name}.yaml versions.{version}"
    )
    click.echo(f"edit them, then run `jarvis contract lock` (and `jarvis diff {old} {new}`)")


@contract.command("check")
@root_option
@click.pass_context
def contract_check(ctx: click.Context) -> None:
    """Fail (exit 4) when a locked version changed or a version is not locked."""
    from jarvis.errors import LockError
    from jarvis.lock import check_lock

    problems = check_lock(get_root(ctx))
    if problems:
        raise LockError("\n".join(problems))
    click.echo("ok: every contract version matches contracts.lock")


# --- dataset commands ----------------------------------------------------------------------


@cli.command("render-dataset")
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
    "--batch-size",
    type=click.IntRange(min=1),
    help="Every split must hold at least this many rows. Default 4.",
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
    type=click.IntRange(min=1),
    help="Worker processes (default: one per CPU, at most 8, for inputs of 4 MB or more). "
    "The output is byte-identical whatever the number.",
)
@click.option("--quiet", "-q", is_flag=True, help="No summary table.")
@root_option
@click.pass_context
def render_dataset_cmd(ctx: click.Context, /, **opts: Any) -> None:
    """Render verified, composition-aware mlx-lm training data from one contract."""
    from pathlib import Path

    from jarvis.dataset import Recipe, format_summary, parse_assignments, render_dataset

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
        "batch_size": opts["batch_size"],
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
        jobs=opts["jobs"],
    )
    if not opts["quiet"]:
        click.echo(format_summary(manifest))
    click.echo(f"wrote {out}")


# --- training commands ---------------------------------------------------------------------


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


@cli.command("train")
@dataset_option
@click.option("--model", required=True, help="Base model folder or hub id (cached when offline).")
@click.option(
    "--adapter-path",
    required=True,
    type=click.Path(file_okay=False),
    help="Adapter folder to write (replaced only when training succeeds).",
)
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
    result = train(
        ds,
        model,
        adapter_path,
        options,
        contract=ds.contract,
        force=force,
        progress=lambda line: click.echo(f"  {line}"),
    )
    stamp = result.stamp
    click.echo(f"adapter: {result.adapter_path} ({result.seconds:.1f}s; log in train.log)")
    click.echo(
        f"stamp: {stamp['ref']} fingerprint {stamp['fingerprint'][:12]}, "
        f"base {stamp['base_model']}, chat template {stamp['chat_template_sha256'][:12]}"
    )


@cli.command("train-config")
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
@click.option(
    "--adapter-path",
    required=True,
    type=click.Path(file_okay=False),
    help="Adapter folder; for a matrix, the parent of one <model>_<dataset> folder per run.",
)
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


# --- inference commands --------------------------------------------------------------------


@cli.command("reply")
@click.argument("message", required=False)
@click.option("--model", help="Base model folder or hub id (optional with --dry-run).")
@click.option("--adapter", type=click.Path(file_okay=False), help="Adapter folder (jarvis train).")
@click.option(
    "--contract", "contract_ref", default="reply", show_default=True, help="Contract ref."
)
@click.option(
    "--conversation",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="A file (or '-'): JSON record or message list, or `sender: text` lines.",
)
@click.option("--sender", default="them", show_default=True, help="Sender of MESSAGE.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Default: the contract's.")
@click.option("--temp", type=Finite(min=0.0), help="Default: the contract's.")
@click.option("--top-p", type=Finite(0.0, 1.0, min_open=True), help="Default: the contract's.")
@click.option("--seed", type=SEED, help="Seed the sampler for a reproducible reply.")
@click.option("--stop", multiple=True, help="Stop string (repeatable; default: the contract's).")
@click.option("--stream", is_flag=True, help="Print the reply as it is generated.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--dry-run", is_flag=True, help="Print the rendered prompt and fingerprint; load no model."
)
@click.option("--strict", is_flag=True, help="Exit 9 when the reply fails an output check.")
@click.option(
    "--allow-mismatch", is_flag=True, help="Load an adapter whose jarvis stamp does not match."
)
@click.option("--no-cache", is_flag=True, help="Do not reuse the prefilled system prefix.")
@root_option
@click.pass_context
def reply_cmd(
    ctx: click.Context,
    message: str | None,
    model: str | None,
    adapter: str | None,
    contract_ref: str,
    conversation: Any,
    sender: str,
    max_tokens: int | None,
    temp: float | None,
    top_p: float | None,
    seed: int | None,
    stop: tuple[str, ...],
    stream: bool,
    as_json: bool,
    dry_run: bool,
    strict: bool,
    allow_mismatch: bool,
    no_cache: bool,
) -> None:
    """Reply to MESSAGE (or --conversation FILE, or '-' for stdin) through the contract.

    The prompt is rendered by the contract and the base model's chat template exactly as
    training saw it. An adapter stamped with another contract or base model is refused
    (exit 8) unless --allow-mismatch.
    """
    import warnings

    from jarvis.contract import load_contract
    from jarvis.engine import parse_request, request_messages

    if (message is None) == (conversation is None):
        raise click.UsageError("give exactly one of MESSAGE, --conversation FILE, or '-'")
    if stream and as_json:
        raise click.UsageError("--stream and --json cannot be combined")
    contract = load_contract(contract_ref, root=get_root(ctx))
    if conversation is not None:
        request = parse_request(contract, read_text_input(conversation), sender=sender)
    elif message == "-":
        request = parse_request(contract, read_text_input("-"), sender=sender)
    else:
        request = parse_request(contract, str(message), sender=sender, lines=False)
    # Validate the request before paying for the model load (seconds).
    request_messages(contract, request)

    if dry_run:
        from jarvis.chat import apply_chat_template, chatml, load_tokenizer

        tokenizer = load_tokenizer(model) if model is not None else None
        messages = request_messages(contract, request, tokenizer=tokenizer)
        if tokenizer is not None:
            prompt = apply_chat_template(tokenizer, messages, add_generation_prompt=True)
            template = f"chat template of {model}"
        else:
            prompt, template = chatml(messages, add_generation_prompt=True), "ChatML (no --model)"
        if as_json:
            info = {"contract": contract.ref, "fingerprint": contract.fingerprint}
            echo_json({**info, "template": template, "messages": messages, "prompt": prompt})
        else:
            click.echo(f"# {contract.ref} fingerprint {contract.fingerprint}", err=True)
            click.echo(f"# rendered with the {template}", err=True)
            click.echo(prompt, nl=False)
        return

    if model is None:
        raise click.UsageError("--model is required (except with --dry-run)")
    from jarvis.adapter import AdapterMismatchWarning, UnstampedAdapterWarning
    from jarvis.engine import ReplyEngine

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnstampedAdapterWarning)
        warnings.simplefilter("always", AdapterMismatchWarning)
        engine = ReplyEngine(
            model, adapter, contract=contract, allow_mismatch=allow_mismatch, root=get_root(ctx)
        )
    for w in caught:
        if issubclass(w.category, UnstampedAdapterWarning | AdapterMismatchWarning):
            click.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    options: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temp,
        "top_p": top_p,
        "seed": seed,
        "stop": list(stop) if stop else None,
        "use_cache": not no_cache,
    }
    reply = None
    for chunk in engine.stream_reply(request, **options):
        if stream and chunk.text:
            click.echo(chunk.text, nl=False)
            sys.stdout.flush()
        reply = chunk.reply or reply
    assert reply is not None
    if as_json:
        echo_json(reply.to_dict())
    else:
        click.echo("" if stream else reply.text)
        marks = " ".join(f"{c.name} {'ok' if c.passed else 'FAILED'}" for c in reply.checks)
        click.echo(
            f"# {reply.contract} | {reply.generation_tokens} tokens ({reply.finish_reason}) | "
            f"ttft {reply.ttft_s * 1000:.1f} ms | {reply.tokens_per_s:.1f} tok/s | "
            f"prefix cache {reply.cached_prefix_tokens}/{reply.prompt_tokens} | checks: {marks}",
            err=True,
        )
    if strict and not reply.passed:
        from jarvis.errors import OutputCheckError

        failed = [f"{c.name} ({c.detail})" for c in reply.checks if not c.passed]
        raise OutputCheckError("the reply failed output checks: " + ", ".join(failed))


# --- verification commands -----------------------------------------------------------------


@cli.command("verify")
@click.argument("dataset_dir", required=False, type=click.Path(file_okay=False))
@click.option(
    "--adapter", type=click.Path(file_okay=False), help="Check this adapter's jarvis stamp."
)
@click.option(
    "--tokenizer", help="Model or tokenizer folder: runtime-prompt tokens must prefix each row's."
)
@click.option("--sample", type=click.IntRange(min=1), help="Re-render N rows (default: all).")
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


@cli.command("diff")
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


@cli.command("eval")
@dataset_option
@click.option(
    "--split", default="test", show_default=True, type=click.Choice(["train", "valid", "test"])
)
@click.option("--model", required=True, help="Base model folder (or cached hub id).")
@click.option("--adapter", type=click.Path(file_okay=False), help="Adapter folder to evaluate.")
@click.option("--baseline", is_flag=True, help="Also run the base model without the adapter.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N records only.")
@click.option(
    "--out",
    "out_dir",
    default="eval-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Report folder.",
)
@click.option("--max-tokens", type=click.IntRange(min=1), help="Default: the contract's.")
@click.option("--force", is_flag=True, help="Replace an existing report folder.")
@click.option("--allow-mismatch", is_flag=True, help="Load an adapter whose stamp mismatches.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json's content.")
@root_option
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    dataset_dir: str,
    split: str,
    model: str,
    adapter: str | None,
    baseline: bool,
    limit: int | None,
    out_dir: str,
    max_tokens: int | None,
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
        out=out_dir,
        max_tokens=max_tokens,
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


# --- dev commands --------------------------------------------------------------------------


@cli.group()
def dev() -> None:
    """Developer tools: fixtures for tests, demos and benchmarks."""


@dev.command("tiny-model")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--hidden", default=64, show_default=True, type=click.IntRange(min=16))
@click.option("--vocab-size", default=512, show_default=True, type=click.IntRange(min=300))
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def dev_tiny_model(
    out: str, layers: int, hidden: int, vocab_size: int, seed: int, force: bool
) -> None:
    """Build a tiny random llama model folder in OUT, offline, in seconds.

    A byte-level BPE tokenizer trained on the fly, a ChatML chat template, config.json and
    safetensors: `mlx_lm.load` opens it. Its replies are noise; it exercises the real paths.
    """
    from jarvis.tiny import build_tiny_model

    path = build_tiny_model(
        out, layers=layers, hidden=hidden, vocab_size=vocab_size, seed=seed, force=force
    )
    click.echo(f"wrote {path} (llama, {layers} layers, hidden {hidden})")


if __name__ == "__main__":  # pragma: no cover
    main()
