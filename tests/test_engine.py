"""ReplyEngine on the tiny model: prompt parity with training, prefix cache, stamp checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from contract_root import add_version, copy_root
from jarvis import ContractMismatchError, render_example
from jarvis.adapter import AdapterMismatchWarning, UnstampedAdapterWarning, check_adapter
from jarvis.chat import apply_chat_template
from jarvis.contract import load_contract
from jarvis.engine import Reply, ReplyEngine, _find_stop, _held_back, parse_request
from jarvis.errors import ModelError, SpecialTokenError

pytestmark = pytest.mark.slow

THREAD = [{"sender": "Sam", "text": "you coming tonight?"}]


@pytest.fixture(scope="module")
def engine(tiny_model: Path, trained_adapter: Path) -> ReplyEngine:
    return ReplyEngine(tiny_model, trained_adapter)


@pytest.fixture(scope="module")
def base_engine(tiny_model: Path) -> ReplyEngine:
    return ReplyEngine(tiny_model)


def _edit_stamp(src: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(src, dest)
    path = dest / "adapter_config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config["jarvis"].pop(key)
        else:
            config["jarvis"][key] = value
    path.write_text(json.dumps(config))
    return dest


def test_runtime_prompt_is_the_training_prompt(engine: ReplyEngine) -> None:
    record = {"messages": THREAD, "reply": "yea omw"}
    row = render_example(record)
    # mlx-lm tokenizes a chat row with the same wrapper and no generation prompt.
    trained = engine.tokenizer.apply_chat_template(row["messages"], return_dict=False)
    prompt = engine.prompt_tokens(record)
    assert trained[: len(prompt)] == prompt
    assert engine.render(THREAD) == apply_chat_template(
        engine.tokenizer, row["messages"][:-1], add_generation_prompt=True
    )


def test_prefix_cache_gives_identical_logprobs(engine: ReplyEngine) -> None:
    import mlx.core as mx

    options: dict[str, Any] = {"temperature": 0.0, "max_tokens": 8, "stop": [], "seed": 0}
    for thread in (THREAD, [{"sender": "Ana", "text": "dinner at 7?"}]):
        cached = list(engine.stream_reply(thread, **options))
        plain = list(engine.stream_reply(thread, use_cache=False, **options))
        assert [c.token for c in cached] == [c.token for c in plain]
        diff = max(
            float(mx.abs(a.logprobs - b.logprobs).max()) for a, b in zip(cached, plain, strict=True)
        )
        assert diff < 1e-5
        assert cached[-1].reply is not None and plain[-1].reply is not None
        assert cached[-1].reply.cached_prefix_tokens == len(engine.prefix_tokens) > 50
        assert plain[-1].reply.cached_prefix_tokens == 0


def test_prefix_is_the_system_turn(engine: ReplyEngine) -> None:
    text = engine.tokenizer.decode(engine.prefix_tokens)
    assert text.startswith("<|im_start|>system\nYou are Jwalin.")
    assert engine.prompt_tokens(THREAD)[: len(engine.prefix_tokens)] == engine.prefix_tokens


def test_end_of_turn_token_stops_generation(engine: ReplyEngine) -> None:
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in engine.tokenizer.eos_token_ids


def test_reply_fields_and_checks(engine: ReplyEngine) -> None:
    reply = engine.reply(THREAD, max_tokens=5)
    assert isinstance(reply, Reply)
    assert reply.contract == "reply@1"
    assert reply.fingerprint == load_contract("reply@1").fingerprint
    assert reply.finish_reason in ("stop", "length")
    assert 1 <= reply.generation_tokens <= 5
    assert reply.prompt_tokens == len(engine.prompt_tokens(THREAD))
    assert reply.ttft_s > 0
    assert [c.name for c in reply.checks] == ["non_empty", "max_words"]
    assert set(reply.to_dict()) >= {
        "text",
        "finish_reason",
        "contract",
        "fingerprint",
        "prompt_tokens",
        "generation_tokens",
        "ttft_s",
        "tokens_per_s",
        "checks",
        "adapter",
    }
    assert reply.adapter == str(engine.adapter)


def test_max_tokens_and_seed(base_engine: ReplyEngine) -> None:
    a = base_engine.reply(THREAD, temperature=1.0, seed=7, stop=[], max_tokens=12)
    b = base_engine.reply(THREAD, temperature=1.0, seed=7, stop=[], max_tokens=12)
    assert a.text == b.text
    assert a.finish_reason == "length" and a.generation_tokens == 12


def test_stop_string_cuts_the_reply_and_stream_matches(base_engine: ReplyEngine) -> None:
    options: dict[str, Any] = {"temperature": 1.0, "seed": 3, "max_tokens": 40}
    full = base_engine.reply(THREAD, stop=[], **options).text
    assert len(full) > 10
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    chunks = list(base_engine.stream_reply(THREAD, stop=[stop], **options))
    reply = chunks[-1].reply
    assert reply is not None
    assert reply.text == full[: full.index(stop)]
    assert reply.finish_reason == "stop"
    assert "".join(c.text for c in chunks) == reply.text


def test_stop_helpers() -> None:
    assert _held_back("abc\n", ["\n\n"]) == 1
    assert _held_back("abc", ["\n\n"]) == 0
    assert _held_back("xx</e", ["</end>"]) == 3
    assert _find_stop("ab\n\ncd", ["\n\n"], 0) == 2
    assert _find_stop("abcd", ["zz", "c"], 1) == 2


def test_generates_from_a_worker_thread(tiny_model: Path, trained_adapter: Path) -> None:
    engine = ReplyEngine(tiny_model, trained_adapter)
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(engine.reply(THREAD, max_tokens=4)))
    worker.start()
    worker.join()
    assert isinstance(out[0], Reply)


def test_worker_thread_process_exits_cleanly(tiny_model: Path, trained_adapter: Path) -> None:
    # A server that generates on a worker thread must be able to shut down: a thread that
    # ends with its mlx streams alive made the interpreter abort at exit (rc 134).
    code = (
        "import threading\n"
        "from jarvis.engine import ReplyEngine\n"
        f"engine = ReplyEngine({str(tiny_model)!r}, {str(trained_adapter)!r})\n"
        "out = []\n"
        "worker = threading.Thread(target=lambda: out.append(engine.reply("
        "[{'sender': 'Sam', 'text': 'hi'}], max_tokens=2)))\n"
        "worker.start()\n"
        "worker.join()\n"
        "assert out, 'no reply'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_fingerprint_mismatch_is_refused(
    tiny_model: Path, trained_adapter: Path, tmp_path: Path
) -> None:
    bad = _edit_stamp(trained_adapter, tmp_path / "bad", fingerprint="0" * 64)
    fingerprint = load_contract("reply@1").short_fingerprint
    with pytest.raises(ContractMismatchError) as info:
        ReplyEngine(tiny_model, bad)
    message = str(info.value)
    assert f"adapter {bad} was trained on reply@1 (fingerprint 000000000000)" in message
    assert f"but the contract is reply@1 (fingerprint {fingerprint})" in message
    with pytest.warns(AdapterMismatchWarning, match="allowed by --allow-mismatch"):
        engine = ReplyEngine(tiny_model, bad, allow_mismatch=True)
    assert engine.reply(THREAD, max_tokens=2).generation_tokens >= 1


def test_bumped_contract_version_is_refused(
    tiny_model: Path, trained_adapter: Path, tmp_path: Path
) -> None:
    root = copy_root(tmp_path / "root")
    add_version(root, "reply", 1, 2)
    (root / "prompts/reply/v2/system.j2").write_text("You are {{ persona_name }}. Be brief.\n")
    with pytest.raises(ContractMismatchError, match=r"trained on reply@1 .* contract is reply@2"):
        ReplyEngine(tiny_model, trained_adapter, contract="reply@2", root=root)
    with pytest.raises(ContractMismatchError):
        check_adapter(trained_adapter, load_contract("reply@2", root=root))


def test_unstamped_adapter_warns(tiny_model: Path, trained_adapter: Path, tmp_path: Path) -> None:
    dest = tmp_path / "plain"
    shutil.copytree(trained_adapter, dest)
    config = json.loads((dest / "adapter_config.json").read_text())
    del config["jarvis"]
    (dest / "adapter_config.json").write_text(json.dumps(config))
    with pytest.warns(UnstampedAdapterWarning, match="has no jarvis stamp"):
        engine = ReplyEngine(tiny_model, dest)
    assert engine.stamp is None and engine.warnings
    assert check_adapter(dest, engine.contract)[0].endswith("checkable")


def test_other_base_model_is_refused(trained_adapter: Path, tmp_path: Path) -> None:
    from jarvis.tiny import CHATML_TEMPLATE, build_tiny_model

    other = build_tiny_model(
        tmp_path / "other", chat_template=CHATML_TEMPLATE.replace("'\\n'", "'\\n\\n'", 1)
    )
    with pytest.raises(ContractMismatchError, match="another chat template"):
        ReplyEngine(other, trained_adapter)
    with pytest.raises(ContractMismatchError, match="another chat template"):
        check_adapter(trained_adapter, load_contract("reply"), base_model=other)


def test_same_shape_base_with_other_weights_is_refused(
    tiny_model: Path, trained_adapter: Path, tmp_path: Path
) -> None:
    # mlx-lm loads this adapter silently: same config.json, same tokenizer and template.
    from jarvis.adapter import config_sha256, weights_sha256
    from jarvis.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    assert config_sha256(other) == config_sha256(tiny_model)
    assert weights_sha256(other) != weights_sha256(tiny_model)
    with pytest.raises(ContractMismatchError, match="was trained on other base weights"):
        ReplyEngine(other, trained_adapter)
    with pytest.raises(ContractMismatchError, match="was trained on other base weights"):
        check_adapter(trained_adapter, load_contract("reply"), base_model=other)
    assert weights_sha256(tmp_path) is None  # no safetensors: nothing to compare


def test_check_adapter_passes_for_its_base(tiny_model: Path, trained_adapter: Path) -> None:
    assert check_adapter(trained_adapter, load_contract("reply@1"), base_model=tiny_model) == []


def test_missing_model_and_adapter(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model not found"):
        ReplyEngine(tmp_path / "nope")
    with pytest.raises(ModelError, match="adapter folder not found"):
        ReplyEngine(tiny_model, tmp_path / "nope")


def test_special_tokens_of_the_tokenizer_are_refused(base_engine: ReplyEngine) -> None:
    with pytest.raises(SpecialTokenError, match=r"messages\[0\]\.text"):
        base_engine.reply([{"sender": "Sam", "text": "hi <|im_end|>"}])


def test_any_contract_with_a_record(tiny_model: Path) -> None:
    engine = ReplyEngine(tiny_model, contract="codegen")
    request = parse_request(engine.contract, "Reverse a string.", lines=False)
    assert request == {"instruction": "Reverse a string."}
    reply = engine.reply(request, max_tokens=3)
    assert reply.contract == "codegen@1"
    assert [c.name for c in reply.checks] == ["sections", "python_parses", "docstring_sections"]
    assert not reply.passed


def test_parse_request_lines() -> None:
    contract = load_contract("reply")
    assert parse_request(contract, "Sam: yo\nhey there") == [
        {"sender": "Sam", "text": "yo"},
        {"sender": "them", "text": "hey there"},
    ]
    assert parse_request(contract, '[{"sender": "A", "text": "b"}]') == [
        {"sender": "A", "text": "b"}
    ]


def test_batched_replies_equal_one_at_a_time_greedy(varied_adapter: Path) -> None:
    # Replies that differ from prompt to prompt: the tiny base would answer "" to all.
    engine = ReplyEngine(adapter=varied_adapter)
    requests = [
        [{"sender": "Sam", "text": "you coming tonight?"}],
        [{"sender": "Ana", "text": "dinner at 7? we could also do 8 if that is better"}],
        [{"sender": "Lee", "text": "hi"}],
        [{"sender": "Sam", "text": "did you pay rent"}, {"sender": "Jwalin", "text": "ya"}],
        [{"sender": "Ana", "text": "lol"}],
    ]
    one = [engine.reply(r, temperature=0.0, max_tokens=12, stop=[]) for r in requests]
    batched = engine.reply_batch(requests, max_tokens=12, batch_size=3, stop=[])
    assert len({o.text for o in one}) > 2 and all(o.text for o in one)
    assert [b.text for b in batched] == [o.text for o in one]
    assert [b.finish_reason for b in batched] == [o.finish_reason for o in one]
    assert [b.prompt_tokens for b in batched] == [o.prompt_tokens for o in one]
    assert [[c.passed for c in b.checks] for b in batched] == [
        [c.passed for c in o.checks] for o in one
    ]
