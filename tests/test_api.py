"""The public API: a short sorted `__all__`, and training rows equal runtime prompts."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jarvis
from jarvis import build_prompt, build_simple_reply_prompt, load_contract, render_example
from jarvis.errors import SpecialTokenError
from jarvis.render import CONTROL_STRINGS

PUBLIC = [
    "Contract",
    "ContractMismatchError",
    "JarvisError",
    "Prompt",
    "Reply",
    "ReplyEngine",
    "__version__",
    "build_prompt",
    "build_simple_reply_prompt",
    "load_contract",
    "render_example",
]


def test_all_is_short_sorted_and_complete() -> None:
    assert jarvis.__all__ == sorted(jarvis.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(jarvis, name) is not None


def _clean(text: str) -> bool:
    return not any(t in text for t in CONTROL_STRINGS)


texts = st.text(st.characters(codec="utf-8"), max_size=40).filter(_clean)
senders = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(_clean)
messages = st.lists(
    st.fixed_dictionaries({"sender": senders, "text": texts}), min_size=1, max_size=6
)
exemplars = st.none() | st.lists(
    st.fixed_dictionaries({"message": texts, "reply": texts}), max_size=3
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(messages=messages, retrieved=exemplars, reply=texts)
def test_training_row_minus_target_equals_runtime_prompt(
    messages: list[dict[str, str]], retrieved: list[dict[str, str]] | None, reply: str
) -> None:
    record: dict[str, Any] = {"messages": messages, "reply": reply}
    if retrieved is not None:
        record["retrieved"] = retrieved
    # Caller-provided exemplars: reply@1 (reply@2 retrieves its own, see test_rag_dataset).
    row = render_example(record, contract="reply@1")
    prompt = build_simple_reply_prompt(messages, retrieved=retrieved, contract="reply@1")
    assert row["messages"][:-1] == prompt.messages
    assert row["messages"][-1] == {"role": "assistant", "content": reply}


@settings(max_examples=60, deadline=None)
@given(instruction=texts.filter(lambda s: len(s) > 0), given_input=texts, output=texts)
def test_codegen_rows_equal_runtime_prompt(instruction: str, given_input: str, output: str) -> None:
    record = {"instruction": instruction, "input": given_input, "output": output}
    row = render_example(record, contract="codegen")
    prompt = build_prompt(record, contract="codegen")
    assert row["messages"][:-1] == prompt.messages


@settings(max_examples=40, deadline=None)
@given(prefix=texts, token=st.sampled_from(CONTROL_STRINGS), suffix=texts)
def test_control_strings_are_refused_anywhere(prefix: str, token: str, suffix: str) -> None:
    try:
        build_simple_reply_prompt([{"sender": "a", "text": prefix + token + suffix}])
    except SpecialTokenError as exc:
        assert exc.field == "messages[0].text"
    else:
        raise AssertionError("control string was not refused")


def test_prompt_reports_its_contract() -> None:
    prompt = build_simple_reply_prompt([{"sender": "Sam", "text": "hi"}])
    contract = load_contract("reply")
    assert (prompt.contract, prompt.fingerprint) == (contract.ref, contract.fingerprint)
    assert prompt.chatml().endswith("<|im_start|>user\nSam: hi<|im_end|>\n<|im_start|>assistant\n")
