"""A tiny, randomly initialised mlx-lm model folder, built offline in about a second.

Tests, `make demo` and the benchmarks need a real model that `mlx_lm.load` opens, with no
hub access and no GPU: a 2-layer llama, a byte-level BPE tokenizer trained on the fly and a
ChatML chat template. Its replies are noise; it exists to exercise the real code paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jarvis.outdir import atomic_dir

# ChatML as Qwen writes it (no tools): the format every bundled contract is tested against.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# EOS is <|endoftext|>, not <|im_end|>, as in many base models: ReplyEngine must add the
# end-of-turn token itself (mlx-lm-facts 3.1).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_CORPUS = """\
You are a helpful assistant. Reply to text messages as yourself.
Match your typical reply length. Write like a real text: casual, lowercase is fine.
hey are you coming tonight? yea im down. omw. running 10 min late sorry
what time is dinner? 7 works. lol same. sounds good see you there
did you pay rent? yes sent it this morning. we gotta split the bill
### Solution
```python
def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.

    Args:
        a: first number.
        b: second number.

    Returns:
        The sum.
    \"\"\"
    return a + b
```
### Usage
print(add(1, 2))
### Sanity test
assert add(2, 2) == 4
Write a Python function that reverses a string. Return the list sorted in place.
The quick brown fox jumps over the lazy dog. 0123456789 !?.,:;'"()[]{}<>@#$%^&*-_=+/\\|~`
"""


def _corpus() -> list[str]:
    lines = _CORPUS.splitlines()
    try:  # the bundled prompts make realistic merges; optional, the model works without them
        from jarvis.contract import bundled_root

        for path in sorted((bundled_root() / "prompts").rglob("*.j2")):
            lines += path.read_text(encoding="utf-8").splitlines()
    except OSError:
        pass
    return [line for line in lines if line] * 4


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def model_config(vocab_size: int, eos_token_id: int, *, layers: int, hidden: int) -> dict[str, Any]:
    """Return the llama `config.json` of a tiny model."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "rope_theta": 10000.0,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }


def build_tiny_model(
    out: str | os.PathLike[str],
    *,
    layers: int = 2,
    hidden: int = 64,
    vocab_size: int = 512,
    seed: int = 0,
    chat_template: str = CHATML_TEMPLATE,
    force: bool = False,
) -> Path:
    """Build a small random llama model folder that `mlx_lm.load` opens, offline.

    Args:
        out: the folder to create.
        layers: transformer blocks.
        hidden: hidden size (a multiple of 64 keeps it quantizable).
        vocab_size: BPE vocabulary size (256 byte symbols plus merges and special tokens).
        seed: seeds the weights; the same seed gives the same model.
        chat_template: the Jinja chat template written into the tokenizer config.
        force: replace `out` if it exists.

    Returns:
        The absolute path of the model folder.

    Raises:
        OutputExistsError: `out` exists and `force` is false.
    """
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from transformers import PreTrainedTokenizerFast

    dest = Path(out).absolute()
    with atomic_dir(dest, kind="model", force=force) as tmp:
        raw = _train_tokenizer(vocab_size)
        tokenizer: Any = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_object=raw,
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            chat_template=chat_template,
        )
        tokenizer.save_pretrained(str(tmp))
        eos_id = raw.token_to_id("<|endoftext|>")
        config = model_config(raw.get_vocab_size(), eos_id, layers=layers, hidden=hidden)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        mx.random.seed(seed)
        args: Any = llama.ModelArgs.from_dict(config)  # type: ignore[no-untyped-call]
        model = llama.Model(args)
        weights = dict(tree_flatten(model.parameters()))
        mx.eval(weights)
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
    return dest
