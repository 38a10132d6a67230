"""Chat-template audit: can a contract be trained and served through a vendor template without skew?

mlx-lm applies the model's chat template twice: once to the whole training row (inside
`mlx_lm.lora`) and once, with `add_generation_prompt=True`, to the runtime prompt. The two
agree only when the template renders the system turn, keeps the generation prompt a prefix of
the conversation, and depends on nothing but its inputs. `audit_chat_template` renders a
representative record of the contract both ways, as transformers does, and reports each
property with a reason. It imports neither mlx nor transformers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from jarvis.chat import THINK_PAIRS
from jarvis.contract import Contract
from jarvis.errors import ContractError, ModelError
from jarvis.files import read_text

Severity = Literal["ok", "note", "warning", "error"]
Format = Literal["chat", "text"]
# Two fixed, distinct "today"s: a template whose output changes between them depends on the date.
DAY_ONE = datetime(2024, 1, 15, 9, 30)
DAY_TWO = datetime(2025, 6, 30, 18, 45)
SEPARATORS = ("\n\n", "\n", " ", "")
# Probe text for reasoning in assistant turns; unlikely to occur in any template.
PROBE_REASONING = "probe reasoning 7f3a"
PROBE_USER = "and after that?"
PROBE_REPLY = "probe reply 7f3a"
REASONING_MARKERS = tuple(m for pair in THINK_PAIRS for m in pair)

Messages = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class ChatTemplate:
    """A vendor chat template and the special tokens it is rendered with.

    Attributes:
        name: a display name (file or folder name).
        source: the Jinja source.
        tokens: `bos_token`, `eos_token`, `pad_token`, `unk_token` (those known).
        add_bos_token: whether the tokenizer prepends BOS when encoding text (None: unknown).
        has_thinking: mlx-lm's default for `enable_thinking` with this tokenizer.
        path: where it was read from.
    """

    name: str
    source: str
    tokens: dict[str, str] = field(default_factory=dict)
    add_bos_token: bool | None = None
    has_thinking: bool = False
    path: Path | None = None

    @property
    def bos_token(self) -> str | None:
        """The BOS string, if the tokenizer has one."""
        return self.tokens.get("bos_token")

    def render(
        self,
        messages: Messages,
        *,
        add_generation_prompt: bool,
        enable_thinking: bool | None = None,
        now: datetime = DAY_ONE,
    ) -> str:
        """Render `messages` as transformers' `apply_chat_template(tokenize=False)` would.

        Args:
            messages: `{"role", "content"}` dicts.
            add_generation_prompt: append the assistant header.
            enable_thinking: passed to the template (mlx-lm always passes a bool).
            now: what `strftime_now` sees, so date dependence is testable.

        Raises:
            jinja2.TemplateError: the template raised (e.g. "System role not supported").
        """
        context: dict[str, Any] = {
            **self.tokens,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "strftime_now": lambda fmt: now.strftime(str(fmt)),
        }
        if enable_thinking is not None:
            context["enable_thinking"] = enable_thinking
        return _compile(self.source).render(context)


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (assistant-mask markers): renders the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers replaces Jinja's HTML-escaping tojson with plain json.dumps.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    """Compile a chat template in the environment transformers uses for chat templates."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(source)


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json stores tokens as strings or as serialized AddedToken dicts.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _pick_template(value: Any, where: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"name": "default", "template": ...}, ...]
        named = {str(t.get("name")): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default")
        if isinstance(chosen, str):
            return chosen
    raise ModelError(f"{where}: no usable chat_template (expected a string or a 'default' entry)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _thinking_in(strings: Sequence[str]) -> bool:
    found = set(strings)
    return any(a in found and b in found for a, b in THINK_PAIRS)


def _from_config(config: Mapping[str, Any]) -> tuple[dict[str, str], bool | None, bool]:
    tokens: dict[str, str] = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        text = _token_text(config.get(key))
        if text is not None:
            tokens[key] = text
    add_bos = config.get("add_bos_token")
    added = config.get("added_tokens_decoder") or {}
    names = [str(v.get("content")) for v in added.values() if isinstance(v, dict)]
    thinking = config.get("has_thinking")
    has_thinking = bool(thinking) if thinking is not None else _thinking_in(names)
    return tokens, add_bos if isinstance(add_bos, bool) else None, has_thinking


def load_chat_template(path: str | os.PathLike[str]) -> ChatTemplate:
    """Load a chat template from a `.jinja` file, a `tokenizer_config.json`, or a model folder.

    A `.jinja` file may have a `.json` sidecar beside it (same stem) giving `bos_token`,
    `eos_token`, `add_bos_token`; a model folder is read like transformers reads it
    (`chat_template.jinja` first, else `tokenizer_config.json`'s `chat_template`).

    Raises:
        ModelError: nothing usable at `path`.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        config_path = p / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        jinja_path = p / "chat_template.jinja"
        if jinja_path.is_file():
            source = read_text(jinja_path, ModelError)
        elif "chat_template" in config:
            source = _pick_template(config["chat_template"], config_path)
        else:
            raise ModelError(
                f"{p}: no chat_template.jinja and no chat_template in tokenizer_config"
            )
        tokens, add_bos, thinking = _from_config(config)
        if not config.get("added_tokens_decoder") and (p / "tokenizer.json").is_file():
            added = _read_json(p / "tokenizer.json").get("added_tokens") or []
            thinking = _thinking_in([str(t.get("content")) for t in added if isinstance(t, dict)])
        return ChatTemplate(p.name, source, tokens, add_bos, thinking, p)
    if not p.is_file():
        raise ModelError(f"{p}: no such chat template file or model folder")
    if p.suffix == ".json":
        config = _read_json(p)
        source = _pick_template(config.get("chat_template"), p)
        tokens, add_bos, thinking = _from_config(config)
        return ChatTemplate(p.name, source, tokens, add_bos, thinking, p)
    source = read_text(p, ModelError)
    sidecar = p.with_suffix(".json")
    config = _read_json(sidecar) if sidecar.is_file() else {}
    tokens, add_bos, thinking = _from_config(config)
    if config.get("has_thinking") is None:
        # No vocabulary to look at: a template that names both markers is a thinking template.
        thinking = _thinking_in([m for m in REASONING_MARKERS if m in source])
    return ChatTemplate(p.name, source, tokens, add_bos, thinking, p)


@dataclass(frozen=True)
class Finding:
    """One audited property: its check name, severity and the reason."""

    check: str
    severity: Severity
    reason: str

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-ready dict."""
        return {"check": self.check, "severity": self.severity, "reason": self.reason}


@dataclass(frozen=True)
class AuditReport:
    """Every finding of one audit; `compatible` when none is an error."""

    template: str
    contract: str
    format: Format
    findings: list[Finding]

    @property
    def compatible(self) -> bool:
        """True when no finding is an error."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def verdict(self) -> str:
        """ "compatible" or "incompatible"."""
        return "compatible" if self.compatible else "incompatible"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "template": self.template,
            "contract": self.contract,
            "format": self.format,
            "verdict": self.verdict,
            "compatible": self.compatible,
            "findings": [f.to_dict() for f in self.findings],
        }

    def lines(self) -> list[str]:
        """The human report: one line per finding, then the verdict."""
        out = [
            f"chat template: {self.template}   contract: {self.contract}   format: {self.format}"
        ]
        for f in self.findings:
            out.append(f"{f.severity.upper():<7} {f.check}: {f.reason}")
        errors = sum(f.severity == "error" for f in self.findings)
        tail = "" if self.compatible else f" ({errors} error{'s' if errors != 1 else ''})"
        out.append(f"verdict: {self.verdict}{tail}")
        return out


def _show(text: str, limit: int = 60) -> str:
    """A short repr of `text`, cut in the middle when long."""
    if len(text) > limit:
        text = text[: limit // 2] + "…" + text[-limit // 2 :]
    return repr(text)


def _divergence(a: str, b: str) -> int:
    """Index of the first differing character of `a` and `b` (len of the shorter if a prefix)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _around(a: str, b: str, width: int = 40) -> str:
    i = _divergence(a, b)
    start = max(0, i - width)
    left = _show(a[start : i + width], 2 * width + 2)
    right = _show(b[start : i + width], 2 * width + 2)
    return f"at char {i}: {left} vs {right}"


@dataclass
class _Auditor:
    template: ChatTemplate
    single: list[dict[str, str]]
    multi: list[dict[str, str]]
    fmt: Format
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, severity: Severity, reason: str) -> None:
        self.findings.append(Finding(check, severity, reason))

    def render(self, messages: Messages, gen: bool, **kwargs: Any) -> str:
        return self.template.render(messages, add_generation_prompt=gen, **kwargs)

    @property
    def default_thinking(self) -> bool:
        return self.template.has_thinking

    def thinking_values(self) -> list[bool]:
        # mlx-lm's default first; the other value only matters if the template reads it.
        values = [self.default_thinking]
        if "enable_thinking" in self.template.source:
            values.append(not self.default_thinking)
        return values

    # -- checks -----------------------------------------------------------------------------

    def system_role(self) -> bool:
        """Return False when the template cannot render the contract's messages at all."""
        system = self.single[0]["content"]
        prompt = self.single[:-1]
        try:
            full = self.render(self.single, False, enable_thinking=self.default_thinking)
            served = self.render(prompt, True, enable_thinking=self.default_thinking)
        except jinja2.TemplateError as exc:
            try:
                self.render(self.single[1:], False, enable_thinking=self.default_thinking)
            except jinja2.TemplateError:
                self.add(
                    "render",
                    "error",
                    f"the template raised {str(exc)!r} on a system/user/assistant conversation",
                )
                return False
            self.add(
                "system-role",
                "error",
                f"system role refused: the template raises "
                f"{str(exc)!r} on a system message, so the contract's system prompt can be "
                "neither trained nor served through it",
            )
            return False
        if system not in full:
            self.add(
                "system-role",
                "error",
                "the system prompt is missing from the training "
                "rendering (system + user + assistant): the model would be trained without it",
            )
            return True
        if system not in served:
            self.add(
                "system-role",
                "error",
                "the system prompt is missing from the runtime "
                "prompt (system + user + generation prompt)",
            )
            return True
        user = prompt[-1]["content"]
        without = self.render([prompt[-1]], True, enable_thinking=self.default_thinking)
        for sep in SEPARATORS:
            merged = [{"role": "user", "content": system + sep + user}]
            if self.render(merged, True, enable_thinking=self.default_thinking) == served:
                self.add(
                    "system-role",
                    "warning",
                    f"no system turn: the system prompt is folded "
                    f"into the user turn (system + {sep!r} + user); training and serving fold "
                    "it the same way, so this is not skew, but the model never sees a "
                    "separate system role",
                )
                return True
        markup = served.replace(system, "").replace(user, "")
        if "system" not in markup.lower():
            self.add(
                "system-role",
                "warning",
                "no system turn: the system prompt is emitted as "
                "bare text with no role marker (no 'system' header around it); identical at "
                "training and serving, so this is not skew",
            )
        else:
            self.add("system-role", "ok", "the system prompt is rendered in a turn of its own")
        head, _, tail = served.partition(system)
        if (
            without.startswith(head)
            and without.endswith(tail)
            and (len(without) > len(head) + len(tail))
        ):
            default = without[len(head) : len(without) - len(tail)]
            if default.strip() and user not in default:
                self.add(
                    "default-system",
                    "note",
                    f"without a system message the template "
                    f"injects its own ({_show(default, 80)}); the contract's system prompt "
                    "replaces it on both sides",
                )
        return True

    def generation_prefix(self) -> None:
        failures: list[str] = []
        for thinking in self.thinking_values():
            prompt = self.render(self.single[:-1], True, enable_thinking=thinking)
            full = self.render(self.single, False, enable_thinking=thinking)
            if not full.startswith(prompt):
                extra = prompt[_divergence(prompt, full) :]
                added = [m for m in REASONING_MARKERS if m in extra]
                why = (
                    f"the generation prompt adds {_show(extra)} (a reasoning block) that "
                    "the training rendering lacks; "
                    if added
                    else ""
                )
                default = thinking == self.default_thinking
                severity: Severity = "error" if default else "warning"
                when = f"with enable_thinking={thinking}" + (
                    " (mlx-lm's default here), "
                    if default
                    else " (not mlx-lm's default; only when served that way), "
                )
                if len(self.thinking_values()) == 1:
                    when = ""
                self.add(
                    "generation-prefix",
                    severity,
                    f"{when}the runtime prompt is not "
                    f"a prefix of the training rendering: {why}"
                    f"{_around(prompt, full)}; mlx-lm's prompt mask and the model's "
                    "training both assume it is",
                )
                failures.append(when)
        prompt = self.render(self.multi[:-1], True, enable_thinking=self.default_thinking)
        full = self.render(self.multi, False, enable_thinking=self.default_thinking)
        multi_ok = full.startswith(prompt)
        if not multi_ok:
            self.add(
                "generation-prefix",
                "warning",
                "multi-turn (system, user, assistant, user, "
                f"assistant): the runtime prompt is not a prefix of the training rendering, "
                f"{_around(prompt, full)}; jarvis contracts render one user turn, so "
                "only multi-turn histories are affected",
            )
        if not failures:
            values = self.thinking_values()
            flags = "; enable_thinking=True and False" if len(values) > 1 else ""
            turns = "single- and multi-turn" if multi_ok else "single-turn"
            self.add(
                "generation-prefix",
                "ok",
                f"render(prompt, add_generation_prompt=True) is a "
                f"string prefix of render(prompt + reply) ({turns}{flags})",
            )

    def outside_state(self) -> None:
        kwargs = {"enable_thinking": self.default_thinking}
        first = self.render(self.single, False, now=DAY_ONE, **kwargs)
        again = self.render(self.single, False, now=DAY_ONE, **kwargs)
        other = self.render(self.single, False, now=DAY_TWO, **kwargs)
        if first != again:
            self.add(
                "outside-state",
                "error",
                "two renderings of the same conversation differ "
                f"({_around(first, again)}): the template is not deterministic",
            )
        elif first != other:
            self.add(
                "outside-state",
                "error",
                f"the output depends on the date: rendered on "
                f"{DAY_ONE:%Y-%m-%d} and {DAY_TWO:%Y-%m-%d} it differs "
                f"{_around(first, other)}; rows rendered on the training day differ from "
                "prompts rendered on any later serving day (the template calls "
                "strftime_now; neither mlx-lm nor jarvis passes a fixed date_string)",
            )
        elif "date_string" in self.template.source:
            self.add(
                "outside-state",
                "note",
                "the template writes a date header but its default "
                "date is a constant (no strftime_now), so every rendering is identical",
            )
        else:
            self.add(
                "outside-state", "ok", "identical when rendered twice and on two different dates"
            )

    def reasoning(self) -> None:
        thinking = self.default_thinking
        prompt = self.render(self.single[:-1], True, enable_thinking=thinking)
        full = self.render(self.single, False, enable_thinking=thinking)
        target = self.single[-1]["content"]
        found = False
        start = len(prompt) if full.startswith(prompt) else _divergence(prompt, full)
        at = full.find(target, start)
        inserted = full[start:at] if at >= 0 else ""
        if any(m in inserted for m in REASONING_MARKERS):
            found = True
            self.add(
                "reasoning",
                "warning",
                f"the template inserts {_show(inserted)} before "
                "the assistant target of the trained turn, so the model learns to emit it "
                "first; replies must have it stripped (identical at training and serving, "
                "not skew)",
            )
        if len(self.thinking_values()) > 1:
            on = self.render(self.single[:-1], True, enable_thinking=True)
            off = self.render(self.single[:-1], True, enable_thinking=False)
            if on != off:
                found = True
                self.add(
                    "reasoning",
                    "note",
                    f"enable_thinking changes the generation prompt "
                    f"({_show(on[_divergence(on, off) :])} with True, "
                    f"{_show(off[_divergence(on, off) :])} with False); mlx-lm passes "
                    f"enable_thinking={thinking} for this tokenizer at training and serving, "
                    "and so does jarvis",
                )
        probe = f"<think>\n{PROBE_REASONING}\n</think>\n\n"
        earlier = [
            *self.multi[:2],
            {"role": "assistant", "content": probe + self.multi[2]["content"]},
            *self.multi[3:],
        ]
        last = [*self.single[:-1], {"role": "assistant", "content": probe + target}]
        for conversation, message in (
            (
                earlier,
                "reasoning (<think>…</think>) is stripped from earlier assistant turns; both "
                "sides strip it, and jarvis contracts have no earlier assistant turns",
            ),
            (
                last,
                "reasoning (<think>…</think>) in the final assistant turn is stripped too: a "
                "training target's reasoning would never be trained",
            ),
        ):
            if PROBE_REASONING not in self.render(conversation, False, enable_thinking=thinking):
                found = True
                self.add("reasoning", "note", message)
        if not found:
            self.add("reasoning", "ok", "no reasoning block is added or stripped")

    def bos(self) -> None:
        bos = self.template.bos_token
        full = self.render(self.single, False, enable_thinking=self.default_thinking)
        adds = self.template.add_bos_token
        assumed = "" if adds else " (add_bos_token unknown: assumed true)"
        if bos and not full.startswith(bos) and bos in full and adds is not False:
            # Emitted after some leading text (e.g. a newline left by the template's own
            # layout): the tokenizer's BOS comes first and stripping a *leading* BOS string
            # cannot remove the template's one.
            lead = full[: full.index(bos)]
            severity: Severity = "warning" if self.fmt == "text" else "note"
            self.add(
                "bos",
                severity,
                f"the template emits {bos!r} after {_show(lead)}, not at the start: a text "
                f"row gets the tokenizer's BOS, then {lead!r}, then a second BOS{assumed}; "
                "stripping a leading BOS string does not remove it"
                + ("" if self.fmt == "text" else " (harmless in chat format)"),
            )
            return
        if not bos or not full.startswith(bos):
            self.add("bos", "ok", "the template emits no BOS string, so no row can get two")
            return
        if adds is False:
            self.add(
                "bos",
                "ok",
                f"the template emits {bos!r} and the tokenizer does not add "
                "another (add_bos_token false)",
            )
            return
        if self.fmt == "text":
            # render-dataset strips the leading BOS string from text rows, so a jarvis dataset
            # never has two; rows rendered any other way would.
            self.add(
                "bos",
                "warning",
                f"double BOS risk in text format: the rendered text starts with {bos!r} and "
                f"the tokenizer adds another when mlx-lm encodes a text row{assumed}; "
                "`jarvis render-dataset --format text` strips the leading BOS string (and "
                "refuses a doubled BOS with --tokenizer), any other renderer must too",
            )
        else:
            self.add(
                "bos",
                "note",
                f"the template emits {bos!r}; harmless in chat format "
                "(apply_chat_template adds no second BOS); text-format rows need it stripped "
                f"or the tokenizer adds a second one{assumed}",
            )


def conversations(
    contract: Contract, records: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Return (single-turn, multi-turn) conversations rendered by `contract` from two records.

    The single turn is the contract's training row (system, user, assistant); the multi-turn
    one appends a second user and assistant turn taken from the second record.
    """
    first = contract.messages(contract.validate(records[0]), with_target=True)
    second = contract.messages(contract.validate(records[-1]), with_target=True)
    user2 = second[1]["content"] if second[1]["content"] != first[1]["content"] else PROBE_USER
    reply2 = second[2]["content"] if second[2]["content"] != first[2]["content"] else PROBE_REPLY
    multi = [*first, {"role": "user", "content": user2}, {"role": "assistant", "content": reply2}]
    return first, multi


def audit_chat_template(
    template: ChatTemplate,
    contract: Contract,
    records: Sequence[Mapping[str, Any]],
    *,
    fmt: Format = "chat",
) -> AuditReport:
    """Audit whether `contract` can be trained and served through `template` without skew.

    Args:
        template: the vendor chat template (see `load_chat_template`).
        contract: the loaded contract.
        records: at least one input record with a target (two give a realistic multi-turn probe).
        fmt: the dataset format the rows will be trained in ("chat" or "text").

    Returns:
        An `AuditReport`; `compatible` is False when any finding is an error.

    Raises:
        ContractError: no records were given.
    """
    if not records:
        raise ContractError(f"{contract.ref}: the audit needs at least one sample record")
    single, multi = conversations(contract, records)
    auditor = _Auditor(template, single, multi, fmt)
    if auditor.system_role():
        try:
            auditor.generation_prefix()
            auditor.outside_state()
            auditor.reasoning()
            auditor.bos()
        except jinja2.TemplateError as exc:
            auditor.add("render", "error", f"the template raised {str(exc)!r}")
    return AuditReport(template.name, contract.ref, fmt, auditor.findings)
