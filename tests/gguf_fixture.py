"""Test helper: write a llama model folder as a GGUF file, the way llama.cpp's converter does.

Tensor names `blk.N.*`, Q and K rows permuted per head for the interleaved rotary layout, the
tokenizer as `tokenizer.ggml.*` arrays, the chat template, and a quantization type per
tensor (F32, F16, Q8_0, Q4_0, Q4_1) through the registry's `gguf` package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute: halves of each head interleaved.
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def gguf_name(name: str) -> str:
    """`model.layers.3.mlp.up_proj.weight` -> `blk.3.ffn_up.weight`."""
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    _, _, layer, *rest = name.split(".")
    module, leaf = ".".join(rest[:-1]), rest[-1]
    return f"blk.{layer}.{NAMES[module]}.{leaf}"


def write_gguf(
    model_dir: Path,
    out: Path,
    *,
    qtype: str = "F32",
    embed_qtype: str | None = None,
    pre: str = "gpt2",
    arch: str = "llama",
) -> Path:
    """Write `model_dir` (a jarvis tiny model or any HF llama folder) as GGUF `out`.

    Args:
        qtype: the type of every 2-D linear weight: F32, F16, Q8_0, Q4_0 or Q4_1.
        embed_qtype: the token embedding's type (default: `qtype`), as SmolLM2 mixes Q8_0/Q4_1.
        pre: `tokenizer.ggml.pre`.
        arch: `general.architecture` (anything but llama is for refusal tests).
    """
    import gguf
    import mlx.core as mx

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    weights = {
        k: np.array(v, dtype=np.float32)
        for k, v in mx.load(str(model_dir / "model.safetensors")).items()
    }
    writer = gguf.GGUFWriter(str(out), arch)
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_vocab_size(cfg["vocab_size"])
    # The tokenizer: byte-level BPE vocab in id order, merges, types (3 control, 1 normal).
    vocab: dict[str, int] = tok["model"]["vocab"]
    added = {t["content"]: t for t in tok.get("added_tokens", [])}
    size = max([*vocab.values(), *(t["id"] for t in added.values())]) + 1
    tokens = [""] * size
    types = [1] * size
    for text, i in vocab.items():
        tokens[i] = text
    for text, t in added.items():
        tokens[t["id"]] = text
        types[t["id"]] = 3 if t.get("special") else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eos = tok_cfg.get("eos_token")
    writer.add_eos_token_id(vocab.get(eos, added.get(eos, {}).get("id", 0)))
    writer.add_bos_token_id(vocab.get(eos, added.get(eos, {}).get("id", 0)))
    writer.add_pad_token_id(vocab.get(eos, added.get(eos, {}).get("id", 0)))
    writer.add_add_bos_token(False)
    template = tok_cfg.get("chat_template") or (model_dir / "chat_template.jinja").read_text()
    writer.add_chat_template(template)
    for name, value in sorted(weights.items()):
        if name.endswith("self_attn.q_proj.weight"):
            value = _permute(value, heads)
        elif name.endswith("self_attn.k_proj.weight"):
            value = _permute(value, kv)
        chosen = embed_qtype if name == "model.embed_tokens.weight" and embed_qtype else qtype
        if value.ndim == 1 or chosen == "F32":
            writer.add_tensor(gguf_name(name), value.astype(np.float32))
        elif chosen == "F16":
            writer.add_tensor(gguf_name(name), value.astype(np.float16))
        else:
            kind = getattr(gguf.GGMLQuantizationType, chosen)
            if chosen.endswith("_K"):
                # gguf's numpy side cannot quantize K-quants: zero blocks of the right size
                # are enough for a file that must be refused.
                block, size = gguf.GGML_QUANT_SIZES[kind]
                packed: Any = np.zeros((value.shape[0], value.shape[1] // block * size), np.uint8)
            else:
                packed = gguf.quants.quantize(value, kind)
            writer.add_tensor(gguf_name(name), packed, raw_shape=packed.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
