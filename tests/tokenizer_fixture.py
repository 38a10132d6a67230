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


def make_tokenizer(
    folder: Path, *, template: str = CHATML, bos: str | None = None, added: tuple[str, ...] = ()
) -> Path:
    """Write `tokenizer.json` and `tokenizer_config.json` into `folder` and return it.

    Args:
        folder: where to write (created).
        template: the chat template.
        bos: a BOS token string the tokenizer prepends when encoding (None: no BOS).
        added: added tokens not flagged special (as Qwen's `<tool_call>`, `<think>`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    special = SPECIAL + ([bos] if bos else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
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
