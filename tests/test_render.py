"""The render path: values are data, special-token policy, escape, tokenizer tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract_root import copy_root
from jarvis import build_simple_reply_prompt, render_example
from jarvis.errors import RecordError, SpecialTokenError
from jarvis.render import CONTROL_STRINGS, ESCAPE_MARK, SpecialTokenPolicy


def test_values_are_never_rendered_as_templates() -> None:
    prompt = build_simple_reply_prompt(
        [{"sender": "Eve", "text": "{{ persona_name }} {% if 1 %}x{% endif %}"}]
    )
    assert prompt.user == "Eve: {{ persona_name }} {% if 1 %}x{% endif %}"


@pytest.mark.parametrize("token", CONTROL_STRINGS)
def test_every_control_string_is_refused_naming_the_field(token: str) -> None:
    with pytest.raises(SpecialTokenError) as info:
        build_simple_reply_prompt(
            [{"sender": "Sam", "text": "hi"}, {"sender": "Sam", "text": f"a{token}b"}]
        )
    assert str(info.value) == (
        f"messages[1].text: contains the chat control string {token!r}; "
        "refused by the contract's special-token policy"
    )
    assert info.value.field == "messages[1].text"


def test_control_string_in_training_target_is_refused_too() -> None:
    record = {"messages": [{"sender": "Sam", "text": "hi"}], "reply": "ok<|im_end|>"}
    with pytest.raises(SpecialTokenError, match=r"^reply: contains"):
        render_example(record)


def test_escape_policy_neutralises_identically_for_training_and_runtime(tmp_path: Path) -> None:
    root = copy_root(tmp_path)
    spec = root / "contracts/reply.yaml"
    spec.write_text(spec.read_text().replace("special_tokens: refuse", "special_tokens: escape"))
    (root / "contracts.lock").unlink()
    messages = [{"sender": "Sam", "text": "say <|im_end|> and [INST]"}]
    prompt = build_simple_reply_prompt(messages, root=root)
    assert prompt.user == f"Sam: say <{ESCAPE_MARK}|im_end|> and [{ESCAPE_MARK}INST]"
    row = render_example({"messages": messages, "reply": "k"}, root=root)
    assert row["messages"][:-1] == prompt.messages


def test_tokenizer_special_tokens_extend_the_policy() -> None:
    policy = SpecialTokenPolicy("refuse").with_tokens(["<|fim_middle|>"])
    assert policy.find("x <|fim_middle|> y") == "<|fim_middle|>"
    assert policy.find("plain text, brackets [ok] and <html>") is None


def test_schema_errors_name_the_field() -> None:
    with pytest.raises(
        RecordError, match=r"^messages\[0\]\.sender: Input should be a valid string$"
    ):
        build_simple_reply_prompt([{"sender": 7, "text": "hi"}])  # type: ignore[dict-item]
    with pytest.raises(RecordError, match=r"^messages\[0\]\.mood: Extra inputs are not permitted$"):
        build_simple_reply_prompt([{"sender": "a", "text": "hi", "mood": "x"}])


def test_training_row_needs_a_target() -> None:
    with pytest.raises(RecordError, match="^reply: required for a training row of reply@2$"):
        render_example({"messages": [{"sender": "Sam", "text": "hi"}]})


def test_special_tokens_of_a_passed_tokenizer_are_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.WordLevel({"[UNK]": 0, "hi": 1}, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=inner, unk_token="[UNK]", additional_special_tokens=["<|fim_middle|>"]
    )
    messages = [{"sender": "Sam", "text": "hi <|fim_middle|>"}]
    assert build_simple_reply_prompt(messages).user == "Sam: hi <|fim_middle|>"
    with pytest.raises(SpecialTokenError, match=r"^messages\[0\]\.text: .*'<\|fim_middle\|>'"):
        build_simple_reply_prompt(messages, tokenizer=tokenizer)
    with pytest.raises(SpecialTokenError, match=r"^messages\[0\]\.text: .*'\[UNK\]'"):
        render_example(
            {"messages": [{"sender": "a", "text": "[UNK]"}], "reply": "k"}, tokenizer=tokenizer
        )


def test_control_string_formed_across_values_is_refused(tmp_path: Path) -> None:
    root = copy_root(tmp_path)
    (root / "prompts/codegen/v1/user.j2").write_text(
        "{{ language }}: {{ instruction }}{{ input }}\n"
    )
    (root / "contracts.lock").unlink()
    record = {"instruction": "say <|im_", "input": "end|> now", "output": "ok"}
    with pytest.raises(SpecialTokenError) as info:
        render_example(record, contract="codegen", root=root)
    assert str(info.value) == (
        "user content: contains the chat control string '<|im_end|>', formed by the "
        "codegen@1 template; refused"
    )


def test_sandbox_still_guards_attribute_access(tmp_path: Path) -> None:
    from jarvis.errors import ContractError
    from jarvis.render import make_environment, render_template

    env = make_environment(tmp_path)
    data = {"m": {"text": "hi", "items": "shadowed"}, "xs": [1, 2]}
    same = "{{ m.text }} {{ m.items is callable }} {{ m.missing is undefined }} {{ range(2)|list }}"
    rendered = render_template(env.from_string(same), data, where="t")
    assert rendered == "hi True True [0, 1]"  # Jinja's own semantics: dict methods win
    for unsafe in ("{{ m.__class__.__mro__ }}", "{{ xs.append(3) }}", "{{ m.update({}) }}"):
        with pytest.raises(ContractError, match="^t: "):
            render_template(env.from_string(unsafe), data, where="t")
    with pytest.raises(ContractError, match="^t: 'dict object' has no attribute 'nope'"):
        render_template(env.from_string("{{ m.nope }}"), data, where="t")
