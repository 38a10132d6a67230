"""`jarvis dev import-gguf`: a llama-architecture GGUF file becomes an mlx-lm model folder.

Read with mlx's own GGUF loader (`mlx.core.load`), which returns F32/F16 tensors as they are
and Q8_0/Q4_0/Q4_1 ones as mlx affine-quantized triples (`weight`, `scales`, `biases`, group
size 32), mixed per tensor. What llama.cpp's converter changed is undone:

- tensor names (`blk.N.attn_q` -> `model.layers.N.self_attn.q_proj`, ...);
- the Q and K rows, permuted per head for the interleaved rotary layout (without this the
  model still talks, but only about half of its greedy tokens match);
- the tokenizer, rebuilt as a byte-level BPE `tokenizer.json` from the vocabulary and merges
  (control tokens special, user-defined tokens added), with the GGUF's chat template.

The result is dense float32 by default on a Linux CPU (mlx's CPU quantized matmul is tens
of times slower than a float32 one) and quantized on Metal. A conversion is verified by its
output: the test compares logits with the model the GGUF was written from.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from jarvis.errors import ModelError
from jarvis.outdir import atomic_dir

# GGUF tensor name part -> mlx-lm llama module path.
_MODULES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Tensor types read exactly: mlx loads K-quants too, but dequantized to float16 by a path
# jarvis cannot check against a reference, so they are refused rather than trusted.
TENSOR_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
# Pre-tokenizers whose split rules are known: `smollm` splits digits one by one first.
PRE_TOKENIZERS = ("gpt2", "default", "smollm")
GROUP_SIZE = 32


def default_dense() -> bool:
    """Dense float32 on anything but Apple silicon (Metal runs quantized matmuls fast)."""
    return not (sys.platform == "darwin" and platform.machine() == "arm64")


def _module_name(stem: str) -> str:
    """`blk.3.ffn_up` -> `model.layers.3.mlp.up_proj` (a tensor name without its leaf)."""
    parts = stem.split(".")
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _MODULES:
        return f"model.layers.{parts[1]}.{_MODULES[parts[2]]}"
    if len(parts) == 1 and parts[0] in _TOP:
        return _TOP[parts[0]]
    raise ModelError(f"unexpected GGUF tensor {stem!r} for a llama model")


def _scalar(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    value = meta.get(key, default)
    if value is None:
        raise ModelError(f"GGUF metadata has no {key!r}")
    value = value.item() if hasattr(value, "item") else value
    # GGUF stores float32: 1e-5 reads back as 9.99999974e-06; keep float32's digits only.
    return float(f"{value:.7g}") if isinstance(value, float) else value


def _unpermute(w: Any, heads: int) -> Any:
    """Undo llama.cpp's per-head rotary row permutation (rows are axis 0)."""
    # llama.cpp wrote reshape(heads, 2, half, ...).swapaxes(1, 2): read it back the other way.
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer(meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Build the `tokenizers` object and the tokenizer_config.json dict from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = _scalar(meta, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelError(f"GGUF tokenizer model {kind!r} is not supported (only byte-level BPE)")
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre not in PRE_TOKENIZERS:
        raise ModelError(
            f"GGUF pre-tokenizer {pre!r} is not supported (known: {', '.join(PRE_TOKENIZERS)}); "
            "its split rules are not known to jarvis, so the tokens would silently differ"
        )
    tokens = [str(t) for t in meta["tokenizer.ggml.tokens"]]
    types = [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()]
    merges: list[tuple[str, str]] = []
    for merge in meta.get("tokenizer.ggml.merges", []):
        left, _, right = str(merge).partition(" ")
        merges.append((left, right))
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    control = [tokens[i] for i, t in enumerate(types) if t == 3]
    user = [tokens[i] for i, t in enumerate(types) if t == 4]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])

    def token(key: str) -> str | None:
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        return None if value is None else tokens[int(value.item())]

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": str(meta.get("tokenizer.chat_template", "")) or None,
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding"),
        "unk_token": token("unknown"),
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token", False)),
        "model_max_length": int(_scalar(meta, "llama.context_length", 2048)),
    }
    return tok, {k: v for k, v in config.items() if v is not None}


def _check_tensor_types(path: Path) -> None:
    """Refuse tensor types outside `TENSOR_TYPES`, reading only the GGUF header.

    Raises:
        ModelError: unreadable header, or an unsupported type (names the first tensor).
    """
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError/struct.error on a bad header
        raise ModelError(f"{path}: cannot read as GGUF ({type(exc).__name__}: {exc})") from exc
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind not in TENSOR_TYPES:
            raise ModelError(
                f"{path}: tensor {tensor.name} is {kind}; supported types are "
                f"{', '.join(TENSOR_TYPES)} (K-quants and others are not): convert the model "
                "with one of those (e.g. llama.cpp's convert_hf_to_gguf.py --outtype q8_0)"
            )


def import_gguf(
    gguf: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dense: bool | None = None,
    dtype: str = "float32",
    force: bool = False,
) -> Path:
    """Convert a llama GGUF file into an mlx-lm model folder.

    Args:
        gguf: the `.gguf` file (F32, F16, Q8_0, Q4_0 and Q4_1 tensors, mixed per tensor).
        out: the model folder to write (config.json, model.safetensors, tokenizer files).
        dense: dequantize every tensor; default `default_dense()` (a Linux CPU: yes).
        dtype: the float type of dense tensors: float32, float16 or bfloat16.
        force: replace `out` if jarvis wrote it.

    Returns:
        The absolute model folder.

    Raises:
        ModelError: not a llama GGUF, an unsupported tensor type (K-quants) or tokenizer.
    """
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import mlx.core as mx

    path = Path(gguf)
    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ModelError(f"--dtype {dtype}: expected float32, float16 or bfloat16")
    dense = default_dense() if dense is None else dense
    _check_tensor_types(path)
    loaded: Any
    try:
        loaded = mx.load(str(path), return_metadata=True)
    except Exception as exc:  # mlx raises ValueError/RuntimeError for types it cannot read
        raise ModelError(
            f"{path}: cannot read as GGUF ({exc}); supported tensor types are F32, F16, "
            "Q8_0, Q4_0 and Q4_1 (K-quants are not)"
        ) from exc
    arrays: dict[str, Any] = loaded[0]
    meta: dict[str, Any] = loaded[1]
    arch = str(meta.get("general.architecture", ""))
    if arch != "llama":
        raise ModelError(f"{path}: architecture {arch!r} is not supported (only llama)")
    heads = int(_scalar(meta, "llama.attention.head_count"))
    kv_heads = int(_scalar(meta, "llama.attention.head_count_kv", heads))
    hidden = int(_scalar(meta, "llama.embedding_length"))
    tokenizer, tok_config = _tokenizer(meta)
    float_type = getattr(mx, dtype)

    # Group the loaded arrays by module: a plain tensor, or a quantized triple.
    modules: dict[str, dict[str, Any]] = {}
    for name, value in arrays.items():
        stem, leaf = name.rsplit(".", 1)  # leaf: weight, or scales/biases when quantized
        modules.setdefault(_module_name(stem), {})[leaf] = value
    weights: dict[str, Any] = {}
    bits_of: dict[str, int] = {}
    for module, parts in sorted(modules.items()):
        w = parts.get("weight")
        if w is None:
            raise ModelError(f"{path}: {module} has scales but no weight")
        heads_here = heads if module.endswith("q_proj") else kv_heads
        rotary = module.endswith(("self_attn.q_proj", "self_attn.k_proj"))
        if "scales" in parts:
            scales, biases = parts["scales"], parts["biases"]
            bits = w.shape[-1] // scales.shape[-1]
            if dense:
                # In float32, as ggml dequantizes: float16 arithmetic would round every weight.
                full = mx.dequantize(
                    w,
                    scales.astype(mx.float32),
                    biases.astype(mx.float32),
                    group_size=GROUP_SIZE,
                    bits=bits,
                )
                weights[f"{module}.weight"] = _unpermute(full, heads_here) if rotary else full
            else:
                # Rows move as units: packing and quantization groups both run along columns.
                if rotary:
                    w, scales, biases = (_unpermute(a, heads_here) for a in (w, scales, biases))
                weights[f"{module}.weight"] = w
                weights[f"{module}.scales"] = scales.astype(float_type)
                weights[f"{module}.biases"] = biases.astype(float_type)
                bits_of[module] = bits
        else:
            weights[f"{module}.weight"] = _unpermute(w, heads_here) if rotary else w
    for name, value in weights.items():
        if not name.endswith((".scales", ".biases")) and value.dtype not in (mx.uint32,):
            weights[name] = value.astype(float_type)
    tied = "lm_head" not in modules
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(meta, "llama.block_count")),
        "intermediate_size": int(_scalar(meta, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": int(_scalar(meta, "llama.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(_scalar(meta, "llama.attention.layer_norm_rms_epsilon")),
        "vocab_size": int(_scalar(meta, "llama.vocab_size", len(tokenizer.get_vocab()))),
        "rope_theta": float(_scalar(meta, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(meta, "llama.context_length", 2048)),
        "tie_word_embeddings": tied,
        "bos_token_id": tokenizer.token_to_id(tok_config["bos_token"])
        if "bos_token" in tok_config
        else None,
        "eos_token_id": tokenizer.token_to_id(tok_config["eos_token"])
        if "eos_token" in tok_config
        else None,
        "torch_dtype": dtype,
    }
    if bits_of:
        common = max(set(bits_of.values()), key=list(bits_of.values()).count)
        quant: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": common}
        for module, bits in sorted(bits_of.items()):
            if bits != common:
                quant[module] = {"group_size": GROUP_SIZE, "bits": bits}
        config["quantization"] = quant
    config = {k: v for k, v in config.items() if v is not None}
    dest = Path(out)
    with atomic_dir(dest, kind="model", force=force, inputs=[path]) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return dest.absolute()
