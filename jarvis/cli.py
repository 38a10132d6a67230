"""The `jarvis` command line: parse options, call library functions, print results.

Logic lives in the library modules. `JarvisError` is caught in one place (`JarvisGroup`)
and turned into `error: <message>` on stderr plus the class's exit code. mlx is imported
only inside the commands that run a model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from jarvis.errors import EXIT_CODES, JarvisError

F = TypeVar("F", bound=Callable[..., Any])


class JarvisGroup(click.Group):
    """A click group that maps every `JarvisError` to its exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JarvisError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


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

# --- training commands ---------------------------------------------------------------------

# --- inference commands --------------------------------------------------------------------

# --- verification commands -----------------------------------------------------------------

# --- dev commands --------------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
