"""The HTTP application of `jarvis serve` (Starlette, run by uvicorn).

Starlette and uvicorn rather than hand-written HTTP: request parsing, keep-alive, chunked
bodies, server-sent events, client disconnects and graceful SIGTERM shutdown are theirs.
Every route renders through the contract (`request_messages`) and answers a bad request
with a 4xx JSON error naming the field; a model failure is the only 5xx.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jarvis.engine import Reply, ReplyEngine
from jarvis.errors import JarvisError, PromptTooLongError, RecordError
from jarvis.serve.api import HTTPProblem, Options, chat_record, reply_record
from jarvis.serve.scheduler import Job, QueueFullError, Scheduler


@dataclass(frozen=True)
class Settings:
    """Server limits and access.

    Attributes:
        api_key: required as `Authorization: Bearer KEY` by every route but /healthz.
        max_body_bytes: larger bodies get 413.
        timeout_s: a request still running after this many seconds gets 504 and its slot back.
        max_batch: requests decoded together; max_queue: waiting or running, else 429.
    """

    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    timeout_s: float = 120.0
    max_batch: int = 16
    max_queue: int = 64


class Metrics:
    """The Prometheus metrics of one server (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("jarvis_requests", "HTTP requests", ["route", "status"],
                                registry=self.registry)  # fmt: skip
        self.tokens = Counter("jarvis_tokens", "Tokens", ["kind"], registry=self.registry)
        self.latency = Histogram("jarvis_request_seconds", "Request latency", ["route"],
                                 registry=self.registry)  # fmt: skip
        self.ttft = Histogram("jarvis_time_to_first_token_seconds", "Time to first token",
                              registry=self.registry)  # fmt: skip
        self.prefix_hits = Counter("jarvis_prefix_cache_hits", "Prompts started from the "
                                   "cached system prefix", registry=self.registry)  # fmt: skip
        self.prefix_misses = Counter("jarvis_prefix_cache_misses", "Prompts prefilled whole",
                                     registry=self.registry)  # fmt: skip
        self.queue = Gauge("jarvis_queue_depth", "Requests waiting or running",
                           registry=self.registry)  # fmt: skip
        self.batch_size = Gauge("jarvis_batch_size", "Requests in the last decode step",
                                registry=self.registry)  # fmt: skip

    def prefix(self, hit: bool) -> None:
        """Count a prefix-cache hit or miss."""
        (self.prefix_hits if hit else self.prefix_misses).inc()

    def batch(self, size: int) -> None:
        """Record the size of a decode step."""
        self.batch_size.set(size)

    def done(self, reply: Reply) -> None:
        """Count a finished reply's tokens and first-token time."""
        self.tokens.labels("prompt").inc(reply.prompt_tokens)
        self.tokens.labels("cached").inc(reply.cached_prefix_tokens)
        self.tokens.labels("generated").inc(reply.generation_tokens)
        self.ttft.observe(reply.ttft_s)


def _server_error(message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": 500}}
    return JSONResponse(body, status_code=500)


def _error(problem: HTTPProblem) -> JSONResponse:
    headers = {"Retry-After": "1"} if problem.status == 429 else None
    return JSONResponse(problem.body(), status_code=problem.status, headers=headers)


def reply_json(reply: Reply, queued_s: float, total_s: float) -> dict[str, Any]:
    """The `/v1/reply` response body."""
    return {
        "text": reply.text,
        "finish_reason": reply.finish_reason,
        "passed": reply.passed,
        "checks": [c.to_dict() for c in reply.checks],
        "contract": reply.contract,
        "fingerprint": reply.fingerprint,
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "cached_tokens": reply.cached_prefix_tokens,
            "generated_tokens": reply.generation_tokens,
        },
        "timings": {
            "queue_s": round(queued_s, 6),
            "ttft_s": round(reply.ttft_s, 6),
            "total_s": round(total_s, 6),
            "tokens_per_s": round(reply.tokens_per_s, 3),
        },
    }


class Server:
    """The engine, the scheduler and the routes of one `jarvis serve` process."""

    def __init__(self, engine: ReplyEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = Metrics()
        self.scheduler = Scheduler(
            engine, max_batch=settings.max_batch, max_queue=settings.max_queue,
            metrics=self.metrics,
        )  # fmt: skip
        self.model_id = engine.adapter or engine.model_id

    # -- request handling -----------------------------------------------------------------

    async def _body(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPProblem(413, f"the body is over {limit} bytes")
        data = bytearray()
        try:
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    raise HTTPProblem(413, f"the body is over {limit} bytes")
        except ClientDisconnect as exc:
            raise HTTPProblem(400, "the client disconnected while sending the body") from exc
        try:
            return json.loads(bytes(data))
        except (ValueError, RecursionError) as exc:
            raise HTTPProblem(400, f"malformed JSON: {exc}") from exc

    def _check_key(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise HTTPProblem(401, "missing or wrong API key (Authorization: Bearer KEY)")

    async def _job(self, record: dict[str, Any], options: Options) -> Job:
        """Render and tokenize off the event loop (a 1 MiB thread takes a while), then queue."""
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._prepare, record, options, loop)

    def _prepare(
        self, record: dict[str, Any], options: Options, loop: asyncio.AbstractEventLoop
    ) -> Job:
        """Render through the contract, check the length, queue the job."""
        engine = self.engine
        try:
            # The engine's own path: the contract, the exemplar store, the tokenizer's template.
            tokens = engine.prompt_tokens(record)
        except RecordError as exc:  # the request's fault; a store failure is the server's (500)
            raise HTTPProblem(422, str(exc), exc.field) from exc
        gen = engine.contract.spec.generation
        limit = gen.max_tokens if options.max_tokens is None else options.max_tokens
        try:
            engine.check_length(len(tokens), limit)
        except PromptTooLongError as exc:
            raise HTTPProblem(413, str(exc), "messages") from exc
        job = Job(
            tokens=tokens,
            max_tokens=limit,
            temperature=gen.temperature if options.temperature is None else options.temperature,
            top_p=gen.top_p if options.top_p is None else options.top_p,
            stops=[s for s in (gen.stop if options.stop is None else options.stop) if s],
            loop=loop,
            events=asyncio.Queue(),
            stream=options.stream,
            seed=options.seed,
        )
        try:
            self.scheduler.submit(job)
        except QueueFullError as exc:
            raise HTTPProblem(429, f"the server is busy: {exc}; retry shortly") from exc
        self.metrics.queue.set(self.scheduler.depth)
        return job

    async def _events(self, job: Job, request: Request) -> AsyncIterator[tuple[str, Any]]:
        """The job's events until it is done; cancels it on timeout or disconnect."""
        deadline = job.created + self.settings.timeout_s
        try:
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise HTTPProblem(504, f"the reply took over {self.settings.timeout_s} s")
                try:
                    kind, value = await asyncio.wait_for(job.events.get(), min(left, 0.5))
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                yield kind, value
                if kind in ("done", "error"):
                    return
        finally:
            if not job.done:
                self.scheduler.cancel(job)

    async def _finish(self, job: Job, request: Request) -> Reply:
        async for kind, value in self._events(job, request):
            if kind == "done":
                self.metrics.done(value)
                return value  # type: ignore[no-any-return]
            if kind == "error":
                raise RuntimeError(value)
        raise HTTPProblem(400, "the client disconnected")

    # -- routes -----------------------------------------------------------------------------

    async def reply(self, request: Request) -> Response:
        """POST /v1/reply."""
        record, options = reply_record(await self._body(request))
        job = await self._job(record, options)
        if options.stream:
            return StreamingResponse(self._reply_sse(job, request), media_type="text/event-stream")
        reply = await self._finish(job, request)
        now = time.perf_counter()
        return JSONResponse(reply_json(reply, job.started - job.created, now - job.created))

    async def _reply_sse(self, job: Job, request: Request) -> AsyncIterator[str]:
        try:
            async for kind, value in self._events(job, request):
                if kind == "text":
                    yield f"event: token\ndata: {json.dumps({'text': value})}\n\n"
                elif kind == "done":
                    self.metrics.done(value)
                    now = time.perf_counter()
                    body = reply_json(value, job.started - job.created, now - job.created)
                    yield f"event: done\ndata: {json.dumps(body)}\n\n"
                else:
                    yield f"event: error\ndata: {json.dumps({'message': value})}\n\n"
        except HTTPProblem as problem:
            yield f"event: error\ndata: {json.dumps(problem.body())}\n\n"

    async def chat(self, request: Request) -> Response:
        """POST /v1/chat/completions (OpenAI-compatible)."""
        record, options = chat_record(await self._body(request), self.engine.contract)
        job = await self._job(record, options)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if options.stream:
            return StreamingResponse(
                self._chat_sse(job, request, ident), media_type="text/event-stream"
            )
        reply = await self._finish(job, request)
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": int(time.time()),
            "model": self.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason, "logprobs": None}],
            "usage": self._usage(reply),
            "jarvis": {"contract": reply.contract, "fingerprint": reply.fingerprint,
                       "passed": reply.passed, "checks": [c.to_dict() for c in reply.checks]},
        })  # fmt: skip

    @staticmethod
    def _usage(reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.generation_tokens,
            "total_tokens": reply.prompt_tokens + reply.generation_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_prefix_tokens},
        }

    async def _chat_sse(self, job: Job, request: Request, ident: str) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            body = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": self.model_id, "choices": [choice], **extra}  # fmt: skip
            return f"data: {json.dumps(body)}\n\n"

        yield chunk({"role": "assistant", "content": ""}, None)
        try:
            async for kind, value in self._events(job, request):
                if kind == "text":
                    yield chunk({"content": value}, None)
                elif kind == "done":
                    self.metrics.done(value)
                    yield chunk({}, value.finish_reason, usage=self._usage(value))
                else:
                    yield f"data: {json.dumps({'error': {'message': value}})}\n\n"
        except HTTPProblem as problem:
            yield f"data: {json.dumps(problem.body())}\n\n"
        yield "data: [DONE]\n\n"

    async def models(self, request: Request) -> Response:
        """GET /v1/models."""
        engine = self.engine
        return JSONResponse({"object": "list", "data": [{
            "id": self.model_id, "object": "model", "created": 0, "owned_by": "jarvis",
            "jarvis": {"base": engine.model_id, "adapter": engine.adapter,
                       "contract": engine.contract.ref,
                       "fingerprint": engine.contract.fingerprint, "stamp": engine.stamp,
                       "exemplars": None if engine.exemplars is None
                       else engine.exemplars.info()},
        }]})  # fmt: skip

    async def health(self, request: Request) -> Response:
        """GET /healthz (no API key needed)."""
        return JSONResponse({"status": "ok", "contract": self.engine.contract.ref})

    async def metrics_text(self, request: Request) -> Response:
        """GET /metrics (Prometheus text format)."""
        self.metrics.queue.set(self.scheduler.depth)
        return Response(generate_latest(self.metrics.registry),
                        media_type="text/plain; version=0.0.4")  # fmt: skip

    def _route(
        self, name: str, handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            began = time.perf_counter()
            try:
                if auth:
                    self._check_key(request)
                response = await handler(request)
            except HTTPProblem as problem:
                response = _error(problem)
            except JarvisError as exc:  # e.g. an unreadable exemplar store: the server's fault
                response = _server_error(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a generation failure or a bug: 500, logged
                logging.getLogger("jarvis.serve").exception("request failed")
                response = _server_error(f"internal error: {type(exc).__name__}: {exc}")
            self.metrics.requests.labels(name, str(response.status_code)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - began)
            return response

        return endpoint

    def app(self) -> Starlette:
        """The Starlette application; starts and stops the scheduler with the server."""
        import contextlib

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.scheduler.start()
            try:
                yield
            finally:
                await asyncio.to_thread(self.scheduler.stop)

        routes = [
            Route("/v1/reply", self._route("reply", self.reply), methods=["POST"]),
            Route("/v1/chat/completions", self._route("chat", self.chat), methods=["POST"]),
            Route("/v1/models", self._route("models", self.models), methods=["GET"]),
            Route("/healthz", self._route("health", self.health, auth=False), methods=["GET"]),
            Route("/metrics", self._route("metrics", self.metrics_text), methods=["GET"]),
        ]
        app = Starlette(routes=routes, lifespan=lifespan)

        async def not_found(request: Request, exc: Exception) -> Response:
            code = getattr(exc, "status_code", 404)
            return _error(HTTPProblem(code, f"{request.method} {request.url.path}: no such route"))

        app.add_exception_handler(404, not_found)
        app.add_exception_handler(405, not_found)
        return app
