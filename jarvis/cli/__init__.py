"""The `jarvis` command line: parse options, call library functions, print results.

One module per command group (contract, dataset, train, reply, serve, inspect, index,
adapter, dev);
what they share (the error handler, option types, `--root`) is in `common`. Logic lives in
the library modules. `JarvisError` is caught in one place (`JarvisGroup`) and turned into
`error: <message>` on stderr plus the class's exit code. mlx and the HTTP stack are imported
only inside the commands that need them.
"""

from __future__ import annotations

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

    signal.signal(signal.SIGTERM, on_sigterm)
    # `JARVIS_FAST_BLAS=1` restarts the process once the command is known (`JarvisGroup`).
    try:
        cli(prog_name="jarvis")
    finally:
        # The interpreter's exit collects garbage over every object left, transformers' and
        # a tokenizer's too (0.08-0.16 s after loading Qwen2.5, three pairs); frozen, they
        # are skipped, and atexit handlers, flushes and module teardown still run as before.
        import gc

        gc.freeze()


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
