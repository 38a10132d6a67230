"""Request bodies to contract records and generation options, without any HTTP stack.

Every problem is an `HTTPProblem` naming the field: 400 for a body that is not a JSON object
or asks what the contract cannot do, 413 for a prompt too long for the model, 422 for a
field of the wrong kind or a record the contract's schema refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from jarvis.contract import Contract

OPTION_KEYS = ("max_tokens", "temperature", "top_p", "seed", "stop", "stream")
MAX_STOPS = 8


class HTTPProblem(Exception):
    """A client error: HTTP status, message and the field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        """The JSON error body (OpenAI's shape: `{"error": {...}}`)."""
        kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found",
                 413: "request_too_large", 422: "invalid_request_error",
                 429: "rate_limit_error", 504: "timeout"}  # fmt: skip
        kind = kinds.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.field,
                          "code": self.status}}  # fmt: skip


@dataclass(frozen=True)
class Options:
    """Generation options of one request; None means the contract's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    stream: bool = False


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HTTPProblem(422, f"{name}: expected a finite number", name)
    return float(value)


def parse_options(
    body: dict[str, Any], *, max_tokens_key: tuple[str, ...] = ("max_tokens",)
) -> Options:
    """Read and check the generation options of a request body.

    Raises:
        HTTPProblem: 422 naming the option that is of the wrong kind or out of range.
    """
    limit = None
    for key in max_tokens_key:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 20:
            raise HTTPProblem(422, f"{key}: expected an integer from 1 to {1 << 20}", key)
        limit = value
    temperature = body.get("temperature")
    if temperature is not None:
        temperature = _number(temperature, "temperature")
        if not 0 <= temperature <= 100:
            raise HTTPProblem(422, "temperature: expected 0 to 100", "temperature")
    top_p = body.get("top_p")
    if top_p is not None:
        top_p = _number(top_p, "top_p")
        if not 0 < top_p <= 1:
            raise HTTPProblem(422, "top_p: expected a number in (0, 1]", "top_p")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 1 << 63):  # fmt: skip
        raise HTTPProblem(422, "seed: expected a non-negative integer", "seed")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or len(stop) > MAX_STOPS:
            raise HTTPProblem(422, f"stop: expected a string or up to {MAX_STOPS} strings", "stop")
        for i, s in enumerate(stop):
            if not isinstance(s, str) or not s or len(s) > 256:
                raise HTTPProblem(422, f"stop[{i}]: expected a non-empty string", f"stop[{i}]")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise HTTPProblem(422, "stream: expected true or false", "stream")
    return Options(limit, temperature, top_p, seed, stop, stream)


def reply_record(body: Any) -> tuple[dict[str, Any], Options]:
    """`POST /v1/reply`: a record of the contract's schema at top level, plus options.

    Raises:
        HTTPProblem: 400 for a body that is not an object; 422 for a bad option.
    """
    if not isinstance(body, dict):
        raise HTTPProblem(400, "the body must be a JSON object (a record of the contract)")
    options = parse_options(body)
    return {k: v for k, v in body.items() if k not in OPTION_KEYS}, options


# OpenAI parameters a client may send that change nothing here (or are always true here).
_IGNORED = {"model", "user", "stream_options", "frequency_penalty", "presence_penalty",
            "logit_bias", "metadata", "store", "service_tier", "parallel_tool_calls"}  # fmt: skip
_CHAT_OWN = {"messages", "thread", "n", "max_completion_tokens", *OPTION_KEYS}


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise HTTPProblem(422, f"{where}[{i}]: only text parts are supported", where)
            text = part.get("text")
            if not isinstance(text, str):
                raise HTTPProblem(422, f"{where}[{i}].text: expected a string", where)
            parts.append(text)
        return "".join(parts)
    raise HTTPProblem(422, f"{where}: expected a string or a list of text parts", where)


def chat_record(body: Any, contract: Contract) -> tuple[dict[str, Any], Options]:
    """`POST /v1/chat/completions`: OpenAI chat messages onto the contract's schema.

    User messages are incoming messages (their `name`, else "them", as the sender); assistant
    messages are the persona's own. The system prompt is the contract's: a client's is refused.

    Raises:
        HTTPProblem: 400 for a system message, an unsupported parameter, or a contract
            without a message thread; 422 for a malformed message or option.
    """
    if not isinstance(body, dict):
        raise HTTPProblem(400, "the body must be a JSON object")
    fields = contract.schema.model_fields
    if "messages" not in fields:
        raise HTTPProblem(
            400,
            f"{contract.ref} has no message thread, so chat messages have no natural mapping "
            "onto its schema: send its record to POST /v1/reply",
        )
    persona = contract.parameters.get(
        contract.retrieval.persona if contract.retrieval is not None else "persona_name"
    )
    unknown = sorted(set(body) - _CHAT_OWN - _IGNORED)
    if unknown:
        raise HTTPProblem(400, f"{unknown[0]}: not supported by jarvis serve", unknown[0])
    n = body.get("n", 1)
    if n != 1:
        raise HTTPProblem(400, "n: only 1 choice per request is supported", "n")
    options = parse_options(body, max_tokens_key=("max_tokens", "max_completion_tokens"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem(422, "messages: expected a non-empty list", "messages")
    thread: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise HTTPProblem(422, f"{where}: expected an object", where)
        role = m.get("role")
        if role in ("system", "developer"):
            raise HTTPProblem(
                400,
                f"{where}.role: {role} messages are refused: the system prompt is the "
                f"contract's ({contract.ref}), so a client's would replace or stack on it",
                f"{where}.role",
            )
        text = _content(m.get("content"), f"{where}.content")
        name = m.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise HTTPProblem(422, f"{where}.name: expected a non-empty string", f"{where}.name")
        if role == "user":
            thread.append({"sender": name or "them", "text": text})
        elif role == "assistant":
            if not isinstance(persona, str):
                raise HTTPProblem(
                    400, f"{where}: {contract.ref} names no persona for assistant messages"
                )
            thread.append({"sender": persona, "text": text})
        else:
            raise HTTPProblem(422, f"{where}.role: expected user or assistant", f"{where}.role")
    record: dict[str, Any] = {"messages": thread}
    if body.get("thread") is not None:
        record["thread"] = body["thread"]
    return record, options
