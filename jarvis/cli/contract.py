"""`jarvis contract list | show | lock | bump | check`."""

from __future__ import annotations

import json

import click

from jarvis.cli.common import (
    echo_json,
    get_root,
    root_option,
)


@click.group("contract")
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


@contract.command("new")
@click.argument("name")
@root_option
@click.pass_context
def contract_new(ctx: click.Context, name: str) -> None:
    """Scaffold contract NAME (spec, templates, schema module, samples) and lock NAME@1.

    It is written into --root, else $JARVIS_ROOT, else the current folder.
    """
    import os

    from jarvis.scaffold import new_contract

    root = get_root(ctx) or os.environ.get("JARVIS_ROOT") or "."
    ref, files = new_contract(name, root)
    base = os.path.abspath(root)
    click.echo(f"created and locked {ref} in {base}:")
    for file in files:
        click.echo(f"  {os.path.relpath(file, base)}")
    click.echo(
        f"try it: jarvis reply --root {root} --contract {ref} --dry-run 'What is a contract?'"
    )
