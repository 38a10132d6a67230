"""Test helper: a tiny byte-level BPE tokenizer folder with a ChatML chat template.

Built offline in milliseconds with `tokenizers`; `jarvis.chat.load_tokenizer` (transformers'
AutoTokenizer) opens it like a real model's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "You are Jwalin. Reply to text messages as yourself.",
    "hey are you coming tonight? yea im down. omw. running late sorry",
    "what time is dinner? 7 works. lol same. sounds good see you there",
    "def add(a, b):\n    return a + b\n### Solution\n### Usage\n### Sanity test",
]


# The split regexes of two vendor tokenizers (their `tokenizer.json`), for the `words` shape.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA_SPLIT = QWEN_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
WORDS = ("gpt2", "qwen", "llama", "digits")


def _pre_tokenizer(words: str) -> tuple[object, object]:
    """(normalizer, pre-tokenizer) in the shape of GPT-2 (and the tiny model), Qwen2.5,
    Llama 3 or SmolLM2."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    if words == "gpt2":
        return None, pre_tokenizers.ByteLevel(add_prefix_space=False)
    if words == "digits":
        return None, pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
    split = pre_tokenizers.Split(
        Regex(QWEN_SPLIT if words == "qwen" else LLAMA_SPLIT), behavior="isolated"
    )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    norm = normalizers.NFC() if words == "qwen" else None
    return norm, pre_tokenizers.Sequence([split, byte_level])


def make_tokenizer(
    folder: Path,
    *,
    template: str = CHATML,
    bos: str | None = None,
    added: tuple[str, ...] = (),
    words: str = "gpt2",
) -> Path:
    """Write `tokenizer.json` and `tokenizer_config.json` into `folder` and return it.

    Args:
        folder: where to write (created).
        template: the chat template.
        bos: a BOS token string the tokenizer prepends when encoding (None: no BOS).
        added: added tokens not flagged special (as Qwen's `<tool_call>`, `<think>`).
        words: how text is split into words: one of `WORDS`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    special = SPECIAL + ([bos] if bos else [])
    tok = Tokenizer(models.BPE())
    norm, tok.pre_tokenizer = _pre_tokenizer(words)
    if norm is not None:
        tok.normalizer = norm
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if added:
        tok.add_tokens(list(added))
    if bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
        )
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": template,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
    }
    if bos:
        config["bos_token"] = bos
        config["add_bos_token"] = True
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
