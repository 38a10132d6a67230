"""What every command shares: the error handler, option types, `--root`, input and output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from jarvis.errors import INTERNAL_ERROR, JarvisError

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


_PROCESSES = click.IntRange(min=1)


class Jobs(click.ParamType):  # type: ignore[type-arg, unused-ignore]  # generic from click 8.2
    """`--jobs`: a whole number of processes, at least 1, or `auto` (the default), as
    `render_dataset(jobs=)` takes them."""

    name = "jobs"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            return _PROCESSES.convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is neither auto nor a whole number of at least 1.", param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "N|auto"


# Seeds reach numpy and mlx, which take at most 32 and 64 bits: one range for every command.
SEED = click.IntRange(0, 2**32 - 1)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup runs as for Ctrl-C."""


def on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


class JarvisGroup(click.Group):
    """A click group that maps every `JarvisError` to its exit code, in one place.

    Ctrl-C exits 130 and SIGTERM 143 (128 + the signal), after the `finally` blocks below
    have removed temp folders and stopped worker processes; never a traceback.
    """

    # Commands that never load mlx: restarted with OpenBLAS they would only pay a second
    # start (0.1-0.3 s a render-dataset run, six pairs).
    WITHOUT_MLX = frozenset({"render-dataset", "contract"})

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Click's lookup, then, with `JARVIS_FAST_BLAS=1`, the process restarted once with
        OpenBLAS for a command that may load mlx (`blas.reexec_if_asked`: it must be
        preloaded at start)."""
        name, command, rest = super().resolve_command(ctx, args)
        if name not in self.WITHOUT_MLX:
            from jarvis.blas import reexec_if_asked

            reexec_if_asked(sys.argv[1:])  # returns at once unless the switch asks for it
        return name, command, rest

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
    from jarvis.files import decode_text, read_text

    if path != "-":
        return read_text(Path(path), InputError).removeprefix("\ufeff")
    return decode_text(sys.stdin.buffer.read(), "<stdin>", InputError, bom=True)


def echo_json(value: Any) -> None:
    """Print one JSON object on stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))
