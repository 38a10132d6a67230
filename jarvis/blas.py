"""A fast BLAS for mlx on a Linux CPU: OpenBLAS from the package registry, one setting away.

The `mlx[cpu]` Linux wheel bundles a reference BLAS: float32 matmul at 2 GFLOP/s, so one
LoRA step of a 135M model takes minutes. mlx calls `cblas_sgemm`; preloading OpenBLAS
(`cmeel-openblas`, a registry wheel with the shared library inside) routes it there, at over
100 GFLOP/s on one core here. The library must be preloaded when the process starts, so
`JARVIS_FAST_BLAS=1` makes the `jarvis` command re-execute itself once with `LD_PRELOAD`
set. Nothing changes on macOS (mlx uses Accelerate and Metal) and nothing in the tests
depends on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jarvis.errors import ModelError

ENV_SWITCH = "JARVIS_FAST_BLAS"
ENV_DIR = "JARVIS_BLAS_DIR"
PACKAGE = "cmeel-openblas"
LIBRARY = "cmeel.prefix/lib/libopenblas.so.0"


def blas_dir() -> Path:
    """Where OpenBLAS is installed: `$JARVIS_BLAS_DIR`, else `~/.cache/jarvis/openblas`."""
    chosen = os.environ.get(ENV_DIR)
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "jarvis" / "openblas"


def _mlx_libs() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("mlx is not installed")
    site = Path(next(iter(spec.submodule_search_locations))).parent
    return site / "mlx_cpu.libs"


def install(folder: Path | None = None) -> Path:
    """Install OpenBLAS (once) and the runtime libraries it needs; return the folder.

    OpenBLAS needs `libgfortran.so.5`, which the mlx CPU wheel ships under a hashed name:
    a `gfortran/` folder of links gives it the name the loader looks for.

    Raises:
        ModelError: not Linux, or the registry cannot be reached.
    """
    if not sys.platform.startswith("linux"):
        raise ModelError("a fast BLAS is for Linux CPUs; on macOS mlx already uses Accelerate")
    folder = folder or blas_dir()
    if not (folder / LIBRARY).is_file():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
             str(folder), PACKAGE],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0 or not (folder / LIBRARY).is_file():
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            raise ModelError(
                f"cannot install {PACKAGE} into {folder}: {lines[-1] if lines else 'pip failed'}"
            )
    links = folder / "gfortran"
    links.mkdir(exist_ok=True)
    libs = _mlx_libs()
    for prefix, name in (
        ("libgfortran-", "libgfortran.so.5"),
        ("libquadmath-", "libquadmath.so.0"),
    ):
        found = sorted(libs.glob(f"{prefix}*")) if libs.is_dir() else []
        link = links / name
        if found and not link.exists():
            link.symlink_to(found[0])
    return folder


def environment(folder: Path | None = None) -> dict[str, str]:
    """The variables that route mlx's BLAS calls to OpenBLAS in a new process.

    One OpenBLAS thread: on this 2-core machine two threads made training ~3x slower.
    """
    folder = folder or blas_dir()
    paths = [str(folder / "gfortran"), str(_mlx_libs())]
    if os.environ.get("LD_LIBRARY_PATH"):
        paths.append(os.environ["LD_LIBRARY_PATH"])
    preload = [str(folder / LIBRARY), *filter(None, os.environ.get("LD_PRELOAD", "").split(":"))]
    return {
        "LD_PRELOAD": ":".join(preload),
        "LD_LIBRARY_PATH": ":".join(paths),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
    }


def active() -> bool:
    """Whether this process runs with OpenBLAS preloaded."""
    return "libopenblas" in os.environ.get("LD_PRELOAD", "")


def reexec_if_asked(argv: list[str], module: str = "jarvis") -> None:
    """With `JARVIS_FAST_BLAS=1` on Linux, restart `python -m MODULE ARGV` once with OpenBLAS.

    Raises:
        ModelError: OpenBLAS cannot be installed.
    """
    if os.environ.get(ENV_SWITCH) != "1" or not sys.platform.startswith("linux") or active():
        return
    folder = install()
    env = {**os.environ, **environment(folder)}
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


_MATMUL = (
    "import time, mlx.core as mx\n"
    "a = mx.random.normal((1024, 1024)); b = mx.random.normal((1024, 1024)); mx.eval(a, b)\n"
    "mx.eval(a @ b); t = time.perf_counter()\n"
    "for _ in range(5): mx.eval(a @ b)\n"
    "print(2 * 1024**3 * 5 / (time.perf_counter() - t) / 1e9)\n"
)


def gflops(env: dict[str, str] | None = None) -> float:
    """Measure float32 matmul speed (1024x1024, GFLOP/s) in a fresh process with `env`."""
    done = subprocess.run(
        [sys.executable, "-c", _MATMUL], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise ModelError(f"the BLAS check failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip())
