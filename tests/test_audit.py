"""Chat-template audit: verdicts and reasons for real vendor templates (vendored fixtures)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis.audit import AuditReport, audit_chat_template, load_chat_template
from jarvis.cli import cli
from jarvis.contract import load_contract
from jarvis.diff import sample_records

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"

# template -> (verdict, {check: severity} that must appear)
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    "qwen2.5-instruct": ("compatible", {"system-role": "ok", "default-system": "note"}),
    "qwen3": ("compatible", {"generation-prefix": "ok", "reasoning": "warning"}),
    "llama-3.1-instruct": ("compatible", {"outside-state": "note", "bos": "note"}),
    "phi-3-mini-instruct": ("compatible", {"system-role": "ok", "bos": "ok"}),
    "smollm2-instruct": ("compatible", {"default-system": "note", "bos": "ok"}),
    "lfm2": ("compatible", {"system-role": "ok", "bos": "note"}),
    "gemma-3-it": ("compatible", {"system-role": "warning"}),
    "deepseek-r1-distill-qwen": ("compatible", {"system-role": "warning", "reasoning": "note"}),
    "mistral-7b-instruct-v0.2": ("incompatible", {"system-role": "error"}),
    "mistral-nemo-instruct-2407": (
        "incompatible",
        {"system-role": "error", "generation-prefix": "error"},
    ),
}


def audit(path: Path, ref: str = "reply@1", fmt: str = "chat") -> AuditReport:
    contract = load_contract(ref)
    records = [r for _, r in sample_records(contract)]
    return audit_chat_template(load_chat_template(path), contract, records, fmt=fmt)  # type: ignore[arg-type]


def severities(report: AuditReport) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in report.findings:
        out.setdefault(f.check, set()).add(f.severity)
    return out


def test_vendored_templates_are_intact() -> None:
    for name in EXPECTED:
        sidecar = json.loads((TEMPLATES / f"{name}.json").read_text())
        data = (TEMPLATES / f"{name}.jinja").read_bytes()
        assert hashlib.sha256(data).hexdigest() == sidecar["template_sha256"], name


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("ref", ["reply@1", "codegen@1"])
def test_vendor_template_verdicts(name: str, ref: str) -> None:
    verdict, wanted = EXPECTED[name]
    report = audit(TEMPLATES / f"{name}.jinja", ref)
    assert report.verdict == verdict, report.lines()
    found = severities(report)
    for check, severity in wanted.items():
        assert severity in found.get(check, set()), (check, report.lines())
    assert all(f.reason for f in report.findings)


def test_system_refused_reason_quotes_the_template() -> None:
    report = audit(TEMPLATES / "mistral-7b-instruct-v0.2.jinja")
    (finding,) = [f for f in report.findings if f.severity == "error"]
    assert finding.reason.startswith("system role refused: the template raises 'Conversation roles")


def test_nemo_drops_the_system_prompt_from_training_rows() -> None:
    report = audit(TEMPLATES / "mistral-nemo-instruct-2407.jinja")
    reasons = [f.reason for f in report.findings if f.severity == "error"]
    assert "missing from the training rendering" in reasons[0]
    assert "runtime prompt is not a prefix of the training rendering: at char 9:" in reasons[1]


def test_gemma3_fold_is_named() -> None:
    report = audit(TEMPLATES / "gemma-3-it.jinja")
    (fold,) = [f for f in report.findings if f.check == "system-role"]
    assert "folded into the user turn (system + '\\n\\n' + user)" in fold.reason


def test_qwen3_empty_think_block_and_thinking_default() -> None:
    template = load_chat_template(TEMPLATES / "qwen3.jinja")
    assert template.has_thinking  # both markers: mlx-lm would pass enable_thinking=True
    report = audit(TEMPLATES / "qwen3.jinja")
    reasons = " ".join(f.reason for f in report.findings)
    assert "inserts '<think>\\n\\n</think>\\n\\n' before the assistant target" in reasons
    assert "stripped from earlier assistant turns" in reasons
    prefix = [f for f in report.findings if f.check == "generation-prefix"]
    assert [f.severity for f in prefix] == ["ok"]
    assert "enable_thinking=True and False" in prefix[0].reason


def test_date_dependent_template_is_incompatible(tmp_path: Path) -> None:
    # The Llama 3.2 pattern: the header carries today's date when strftime_now exists.
    path = tmp_path / "dated.jinja"
    path.write_text(
        "{{ bos_token }}Today Date: {{ strftime_now('%d %b %Y') }}\n"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    report = audit(path)
    assert report.verdict == "incompatible"
    (finding,) = [f for f in report.findings if f.severity == "error"]
    assert finding.check == "outside-state"
    assert "depends on the date: rendered on 2024-01-15 and 2025-06-30" in finding.reason
    assert "15 Jan 2024" in finding.reason and "30 Jun 2025" in finding.reason


def test_reasoning_added_to_generation_prompt_breaks_the_prefix(tmp_path: Path) -> None:
    # The later DeepSeek-R1-Distill revision ends its generation prompt with "<think>\n".
    source = (TEMPLATES / "deepseek-r1-distill-qwen.jinja").read_text(encoding="utf-8")
    patched = source.replace(
        "{{'<｜Assistant｜>'}}{% endif %}", "{{'<｜Assistant｜><think>\\n'}}{% endif %}"
    )
    assert patched != source
    path = tmp_path / "deepseek-later.jinja"
    path.write_text(patched, encoding="utf-8")
    report = audit(path)
    assert report.verdict == "incompatible"
    (finding,) = [f for f in report.findings if f.severity == "error"]
    assert finding.check == "generation-prefix"
    assert (
        "adds '<think>\\n' (a reasoning block) that the training rendering lacks" in finding.reason
    )


def test_text_format_double_bos_is_a_warning() -> None:
    chat = audit(TEMPLATES / "lfm2.jinja", fmt="chat")
    text = audit(TEMPLATES / "lfm2.jinja", fmt="text")
    assert chat.compatible and text.compatible  # render-dataset strips the BOS string
    (finding,) = [f for f in text.findings if f.check == "bos"]
    assert finding.severity == "warning"
    assert finding.reason.startswith("double BOS risk in text format: the rendered text starts ")
    # A tokenizer that adds no BOS of its own cannot double it.
    smol = audit(TEMPLATES / "smollm2-instruct.jinja", fmt="text")
    assert [f.severity for f in smol.findings if f.check == "bos"] == ["ok"]


def test_bos_after_leading_text_is_not_missed(tmp_path: Path) -> None:
    # The chujiezheng mistral-instruct layout: a blank line before `{{ bos_token + system }}`,
    # so the rendering starts "\n<s>": the BOS string is there, just not first.
    path = tmp_path / "mistral-indented.jinja"
    path.write_text(
        "{% if messages[0]['role'] == 'system' %}\n"
        "    {% set system = messages[0]['content'] + '\\n\\n' %}\n"
        "    {% set messages = messages[1:] %}\n"
        "{% else %}\n"
        "    {% set system = '' %}\n"
        "{% endif %}\n"
        "\n"
        "{{ bos_token + system }}"
        "{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
        "{% else %} {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    path.with_suffix(".json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    text = audit(path, fmt="text")
    assert text.compatible
    (finding,) = [f for f in text.findings if f.check == "bos"]
    assert finding.severity == "warning"
    assert finding.reason.startswith("the template emits '<s>' after '\\n', not at the start")
    chat = audit(path, fmt="chat")
    assert [f.severity for f in chat.findings if f.check == "bos"] == ["note"]


def test_model_folder_reads_tokenizer_config(tmp_path: Path) -> None:
    sidecar = json.loads((TEMPLATES / "gemma-3-it.json").read_text())
    config = {
        "chat_template": (TEMPLATES / "gemma-3-it.jinja").read_text(encoding="utf-8"),
        "bos_token": {"content": sidecar["bos_token"], "special": True},
        "eos_token": sidecar["eos_token"],
        "add_bos_token": True,
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    template = load_chat_template(tmp_path)
    assert template.bos_token == "<bos>" and template.add_bos_token is True
    assert (
        audit(tmp_path).to_dict()["findings"]
        == audit(TEMPLATES / "gemma-3-it.jinja").to_dict()["findings"]
    )
    shutil.copy(TEMPLATES / "qwen3.jinja", tmp_path / "chat_template.jinja")
    assert load_chat_template(tmp_path).source.startswith("{%- if tools %}")  # .jinja wins


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_renders_like_transformers(name: str) -> None:
    from transformers.utils.chat_template_utils import render_jinja_template

    template = load_chat_template(TEMPLATES / f"{name}.jinja")
    messages = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "yo"}]
    for gen, msgs in ((False, messages), (True, messages[:1])):
        ours = template.render(msgs, add_generation_prompt=gen, enable_thinking=False)
        (theirs,), _ = render_jinja_template(
            conversations=[msgs],
            chat_template=template.source,
            add_generation_prompt=gen,
            enable_thinking=False,
            **template.tokens,
        )
        assert ours == theirs


def test_cli_compatible_and_incompatible() -> None:
    runner = CliRunner()
    qwen = str(TEMPLATES / "qwen2.5-instruct.jinja")
    ok = runner.invoke(cli, ["verify", "--chat-template", qwen, "--contract", "reply@1"])
    assert ok.exit_code == 0, ok.output
    lines = ok.output.splitlines()
    assert lines[0] == "chat template: qwen2.5-instruct.jinja   contract: reply@1   format: chat"
    assert lines[1] == "OK      system-role: the system prompt is rendered in a turn of its own"
    assert lines[-1] == "verdict: compatible"

    bad = runner.invoke(
        cli,
        [
            "verify",
            "--chat-template",
            str(TEMPLATES / "mistral-7b-instruct-v0.2.jinja"),
            "--contract",
            "codegen@1",
        ],
    )
    assert bad.exit_code == 1
    assert bad.stdout.splitlines()[-1] == "verdict: incompatible (1 error)"
    assert bad.stderr == (
        "error: codegen@1 cannot be trained and served through mistral-7b-instruct-v0.2.jinja "
        "without skew\n"
    )


def test_cli_json_and_missing_template(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["verify", "--chat-template", str(TEMPLATES / "gemma-3-it.jinja"), "--json"]
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["chat_template"]["verdict"] == "compatible"
    missing = runner.invoke(cli, ["verify", "--chat-template", str(tmp_path / "nope.jinja")])
    assert missing.exit_code == 11
    assert "no such chat template file or model folder" in missing.stderr
    usage = runner.invoke(cli, ["verify"])
    assert usage.exit_code == 2
