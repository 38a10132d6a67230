"""`jarvis dev import-gguf`: a conversion is verified by its output (logits, tokens).

The GGUFs are written here from the tiny model with the registry's `gguf` package, the way
llama.cpp's converter writes them (names, rotary row permutation, tokenizer arrays).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_fixture import write_gguf
from jarvis.cli import cli

pytestmark = pytest.mark.slow
TEXTS = [
    "hello there, what time is dinner? 7 works",
    "digits 1234567 and   spaces",
    "<|im_start|>user\nyou up?<|im_end|>",
    "unicode: café, 日本, emoji 🙂",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama model whose linear layers have 256 columns (K-quants need 256)."""
    from jarvis.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("gguf") / "src", hidden=256, layers=2)


def _logits(model_dir: Path, text: str) -> tuple[np.ndarray, list[int]]:
    import mlx.core as mx
    from mlx_lm import load

    model, tok = load(str(model_dir))
    ids = tok.encode(text)
    return np.array(model(mx.array([ids]))), ids


def _import(gguf: Path, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli, ["dev", "import-gguf", str(gguf), str(out), *extra])


def test_f32_gguf_imports_to_the_same_logits_tokens_and_template(
    source: Path, tmp_path: Path
) -> None:
    gguf = write_gguf(source, tmp_path / "m.gguf")
    result = _import(gguf, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {tmp_path / 'out'} (llama, dense float32)\n"
    want, ids = _logits(source, TEXTS[0])
    got, got_ids = _logits(tmp_path / "out", TEXTS[0])
    assert got_ids == ids
    assert np.abs(got - want).max() < 1e-4
    from jarvis.chat import load_tokenizer

    src_tok, out_tok = load_tokenizer(source), load_tokenizer(tmp_path / "out")
    for text in TEXTS:
        assert out_tok.encode(text) == src_tok.encode(text), text
    assert out_tok.chat_template == (source / "chat_template.jinja").read_text()
    assert out_tok.eos_token == "<|endoftext|>"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and "quantization" not in config


def _dequantized_reference(source: Path, dest: Path, qtype: str, embed: str | None) -> Path:
    """The source model with each weight replaced by what the GGUF really stores."""
    import gguf
    import mlx.core as mx

    shutil.copytree(source, dest)
    weights = {k: np.array(v) for k, v in mx.load(str(source / "model.safetensors")).items()}
    for name, value in weights.items():
        kind_name = embed if name == "model.embed_tokens.weight" and embed else qtype
        if value.ndim == 2 and kind_name not in ("F32", "F16"):
            kind = getattr(gguf.GGMLQuantizationType, kind_name)
            weights[name] = gguf.quants.dequantize(gguf.quants.quantize(value, kind), kind)
        elif value.ndim == 2 and kind_name == "F16":
            weights[name] = value.astype(np.float16).astype(np.float32)
    mx.save_safetensors(
        str(dest / "model.safetensors"), {k: mx.array(v) for k, v in weights.items()}
    )
    return dest


@pytest.mark.parametrize(
    ("qtype", "embed"), [("F16", None), ("Q8_0", None), ("Q4_0", None), ("Q4_1", "Q8_0")]
)
def test_quantized_gguf_matches_its_dequantized_source(
    source: Path, tmp_path: Path, qtype: str, embed: str | None
) -> None:
    gguf = write_gguf(source, tmp_path / "m.gguf", qtype=qtype, embed_qtype=embed)
    reference = _dequantized_reference(source, tmp_path / "ref", qtype, embed)
    assert _import(gguf, tmp_path / "dense").exit_code == 0
    want, _ = _logits(reference, TEXTS[0])
    dense, _ = _logits(tmp_path / "dense", TEXTS[0])
    assert np.abs(dense - want).max() < 1e-3
    if qtype == "F16":
        return
    # Kept quantized (as on Metal): the same values through mlx's quantized kernels.
    result = _import(gguf, tmp_path / "q", "--keep-quantized")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    bits = {"Q8_0": 8, "Q4_0": 4, "Q4_1": 4}[qtype]
    assert config["quantization"]["bits"] == bits
    if embed is not None:
        # SmolLM2's mix: 4-bit linears, an 8-bit embedding, as a per-module override.
        assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    kept, _ = _logits(tmp_path / "q", TEXTS[0])
    assert np.abs(kept - want).max() < 1e-2


def test_unsupported_files_are_refused_with_exit_11(source: Path, tmp_path: Path) -> None:
    cases = {
        "arch": (write_gguf(source, tmp_path / "a.gguf", arch="gptneox"), "architecture"),
        "pre": (write_gguf(source, tmp_path / "p.gguf", pre="qwen2"), "pre-tokenizer 'qwen2'"),
        "kquant": (write_gguf(source, tmp_path / "k.gguf", qtype="Q4_K"), "is Q4_K; supported"),
    }
    (tmp_path / "junk.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    cases["junk"] = (tmp_path / "junk.gguf", "cannot read as GGUF")
    for name, (path, message) in cases.items():
        result = _import(path, tmp_path / f"out-{name}")
        assert result.exit_code == 11, (name, result.output)
        assert result.stderr.startswith("error: ") and message in result.stderr, name
        assert not (tmp_path / f"out-{name}").exists()
