"""The `jarvis` command line: parse options, call library functions, print results.

One module per command group (contract, dataset, train, reply, serve, inspect, index,
adapter, dev);
what they share (the error handler, option types, `--root`) is in `common`. Logic lives in
the library modules. `JarvisError` is caught in one place (`JarvisGroup`) and turned into
`error: <message>` on stderr plus the class's exit code. mlx and the HTTP stack are imported
only inside the commands that need them.
"""

from __future__ import annotations

import os

import click

from jarvis.cli.common import JarvisGroup, on_sigterm, root_option
from jarvis.errors import EXIT_CODES

# "\b" stops click from re-wrapping the table.
EPILOG = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()
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
    import sys

    from jarvis.errors import JarvisError

    signal.signal(signal.SIGTERM, on_sigterm)
    if os.environ.get("JARVIS_FAST_BLAS") == "1" and not _never_runs_mlx(sys.argv[1:]):
        from jarvis.blas import reexec_if_asked

        try:
            reexec_if_asked(sys.argv[1:])  # returns only when nothing is to be done
        except JarvisError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
    try:
        cli(prog_name="jarvis")
    finally:
        # The interpreter's exit collects garbage over every object left, transformers' and
        # a tokenizer's too (0.1-0.15 s after loading Qwen2.5, measured); frozen, they are
        # skipped, and atexit handlers, flushes and module teardown still run as before.
        import gc

        gc.freeze()


# Commands that never load mlx: OpenBLAS would only cost them a second start (0.15-0.2 s).
_WITHOUT_MLX = {"render-dataset", "contract"}


def _never_runs_mlx(args: list[str]) -> bool:
    """Whether the command in `args` (after the group's own options) never loads mlx."""
    words = iter(args)
    for word in words:
        if word == "--root":
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word in _WITHOUT_MLX
    return False


def _register() -> None:
    from jarvis.cli import adapter, contract, dataset, dev, index, inspect, reply, serve, train

    for command in (
        contract.contract,
        dataset.render_dataset_cmd,
        train.train_cmd,
        train.train_config_cmd,
        reply.reply_cmd,
        serve.serve_cmd,
        inspect.verify_cmd,
        inspect.diff_cmd,
        inspect.eval_cmd,
        index.index,
        adapter.adapter,
        dev.dev,
        dev.examples_cmd,
    ):
        cli.add_command(command)


_register()
