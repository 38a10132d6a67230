"""`jarvis reply`: one request through the contract, on a warm model for this process."""

from __future__ import annotations

import sys
from typing import Any

import click

from jarvis.cli.common import (
    SEED,
    Finite,
    echo_json,
    get_root,
    read_text_input,
    root_option,
)


@click.command("reply")
@click.argument("message", nargs=-1)
@click.option(
    "--model",
    help="Base model folder or hub id. Default: the base the adapter's stamp names "
    "(none needed with --dry-run).",
)
@click.option(
    "--adapter",
    "--adapter-path",
    "adapter",
    type=click.Path(file_okay=False),
    help="Adapter folder (jarvis train).",
)
@click.option(
    "--contract",
    "contract_ref",
    help="Contract ref. Default: the adapter's (from its stamp), else reply.",
)
@click.option(
    "--conversation",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="A file (or '-'): JSON record or message list, or `sender: text` lines.",
)
@click.option("--sender", default="them", show_default=True, help="Sender of MESSAGE.")
@click.option(
    "--exemplars",
    type=click.Path(dir_okay=False),
    help="Exemplar store for a contract with retrieval (reply@2): the dataset's "
    "exemplars.sqlite or one from `jarvis index build`.",
)
@click.option("--thread", help="The conversation's thread id: its own exemplars are left out.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Default: the contract's.")
@click.option(
    "--temperature", "--temp", "temp", type=Finite(min=0.0), help="Default: the contract's."
)
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
    message: tuple[str, ...],
    model: str | None,
    adapter: str | None,
    contract_ref: str | None,
    conversation: Any,
    sender: str,
    exemplars: str | None,
    thread: str | None,
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

    MESSAGE may be several words, quoted or not: `jarvis reply --sender Sam you up?`.

    The prompt is rendered by the contract and the base model's chat template exactly as
    training saw it. An adapter stamped with another contract or base model is refused
    (exit 8) unless --allow-mismatch.
    """
    import warnings

    from jarvis.contract import load_contract
    from jarvis.engine import parse_request, request_messages

    if bool(message) == (conversation is not None):
        raise click.UsageError("give exactly one of MESSAGE, --conversation FILE, or '-'")
    if stream and as_json:
        raise click.UsageError("--stream and --json cannot be combined")
    root = get_root(ctx)
    if contract_ref is None and adapter is not None:
        from jarvis.adapter import read_stamp, stamp_contract

        ref, root = stamp_contract(read_stamp(adapter), root)
        contract_ref = ref
    contract = load_contract(contract_ref or "reply", root=root)
    text = " ".join(message)
    if conversation is not None:
        request = parse_request(contract, read_text_input(conversation), sender=sender)
    elif text == "-":
        request = parse_request(contract, read_text_input("-"), sender=sender)
    else:
        request = parse_request(contract, text, sender=sender, lines=False)
    if thread is not None:
        request = {**request, "thread": thread} if isinstance(request, dict) else {
            "messages": request, "thread": thread}  # fmt: skip
    store: Any = None
    if exemplars is not None:
        from jarvis.rag.retrieve import open_store

        store = open_store(contract, exemplars)
    # Validate the request before paying for the model load (seconds).
    request_messages(contract, request, exemplars=store)

    if dry_run:
        from jarvis.adapter import read_stamp, resolve_model_dir
        from jarvis.chat import apply_chat_template, chatml, load_tokenizer

        if model is None and adapter is not None:
            # The base the adapter was trained on, when it is here: its chat template.
            base = (read_stamp(adapter) or {}).get("base_model")
            if isinstance(base, str) and resolve_model_dir(base) is not None:
                model = base

        tokenizer = load_tokenizer(model) if model is not None else None
        messages = request_messages(contract, request, tokenizer=tokenizer, exemplars=store)
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

    if model is None and adapter is None:
        raise click.UsageError("--model is required (except with --dry-run or --adapter)")
    from jarvis.adapter import AdapterMismatchWarning, UnstampedAdapterWarning
    from jarvis.engine import ReplyEngine

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnstampedAdapterWarning)
        warnings.simplefilter("always", AdapterMismatchWarning)
        engine = ReplyEngine(
            model, adapter, contract=contract, allow_mismatch=allow_mismatch, root=root,
            exemplars=store,  # opened and checked above: not opened twice
        )  # fmt: skip
    if engine.store_note is not None:
        click.echo(f"note: {engine.store_note}", err=True)
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
