"""Continuous batching: one thread owns the model and decodes every live request together.

Requests arrive from the HTTP event loop as `Job`s; the thread inserts each into mlx-lm's
`BatchGenerator` with a private copy of the prefilled system-prefix cache, steps the batch,
and sends each job its text as it is released (stop strings held back) and, at the end,
its `Reply` with the contract's checks. A cancelled job (client gone, timeout) leaves the
batch at the next step, freeing its slot.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jarvis.checks import run_checks
from jarvis.engine import Reply, ReplyEngine, _find_stop, _held_back


def _seeded_sampler(temperature: float, top_p: float, seed: int) -> Any:
    """mlx-lm's temperature/top-p sampling, drawing from a random key of this request's own.

    BatchGenerator calls each request's sampler on its own row, so a seeded request gives
    the same reply whatever else is in the batch (mlx's global generator would be shared).
    """
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_top_p

    state = [mx.random.key(seed)]

    def sample(logprobs: Any) -> Any:
        state[0], key = mx.random.split(state[0])
        if 0 < top_p < 1:
            logprobs = apply_top_p(logprobs, top_p)
        return mx.random.categorical(logprobs * (1.0 / temperature), key=key)

    return sample


class QueueFullError(Exception):
    """The bounded queue of waiting and running requests is full (HTTP 429)."""


@dataclass
class Job:
    """One request on its way through the batch.

    Attributes:
        tokens: the full prompt tokens.
        max_tokens, temperature, top_p, stops: generation settings.
        loop, events: where the thread sends ("text", str), ("done", Reply) or ("error", str).
    """

    tokens: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stops: list[str]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]]
    stream: bool = False  # send ("text", piece) events as text is released
    seed: int | None = None  # sampling from its own random key: the same reply in any batch
    created: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    uid: int = -1
    ids: list[int] = field(default_factory=list)
    emitted: int = 0
    cached: int = 0
    started: float = 0.0
    first: float = 0.0
    done: bool = False

    def send(self, kind: str, value: Any) -> None:
        """Hand an event to the job's event loop (thread-safe)."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Scheduler:
    """The generation thread and its bounded queue.

    Args:
        engine: a loaded `ReplyEngine` (its model, tokenizer, contract and prefix cache).
        max_batch: requests decoded together.
        max_queue: requests waiting or running at most; more get `QueueFullError`.
        metrics: a `Metrics` to count into, or None.
    """

    def __init__(
        self, engine: ReplyEngine, *, max_batch: int = 16, max_queue: int = 64, metrics: Any = None
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics
        self._inbox: queue.Queue[Job] = queue.Queue()
        self._live: dict[int, Job] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jarvis-batch", daemon=True)

    @property
    def depth(self) -> int:
        """Requests waiting or being generated."""
        return self._count

    def start(self) -> None:
        """Start the generation thread."""
        self._thread.start()

    def stop(self) -> None:
        """Finish the requests in flight, then end the thread."""
        self._stop.set()
        self._thread.join()

    def submit(self, job: Job) -> None:
        """Queue a job.

        Raises:
            QueueFullError: `max_queue` requests are already waiting or running.
        """
        with self._lock:
            if self._count >= self.max_queue:
                raise QueueFullError(f"{self._count} requests are queued or running")
            self._count += 1
        self._inbox.put(job)

    def cancel(self, job: Job) -> None:
        """Drop a job at the next step (its client is gone or its time is up)."""
        job.cancelled = True

    def _release(self, job: Job) -> None:
        if not job.done:
            job.done = True
            with self._lock:
                self._count -= 1

    def _run(self) -> None:
        from mlx_lm.generate import BatchGenerator

        from jarvis.engine import _release_streams_at_thread_exit

        _release_streams_at_thread_exit()
        tokenizer = self.engine.tokenizer
        gen = BatchGenerator(
            self.engine.model,
            stop_tokens=[[t] for t in tokenizer.eos_token_ids],
            completion_batch_size=self.max_batch,
            prefill_batch_size=self.max_batch,
        )
        try:
            while True:
                idle = not self._live
                if idle and self._stop.is_set() and self._inbox.empty():
                    return
                self._admit(gen, block=idle)
                self._drop_cancelled(gen)
                if self._live:
                    self._step(gen)
        finally:
            gen.close()  # type: ignore[no-untyped-call]

    def _admit(self, gen: Any, *, block: bool) -> None:
        from mlx_lm.sample_utils import make_sampler

        while len(self._live) < self.max_batch:
            try:
                job = self._inbox.get(timeout=0.05) if block else self._inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if job.cancelled:
                self._release(job)
                continue
            cached, cache = self.engine.prefix_cache_for(job.tokens)
            job.cached = cached
            job.started = time.perf_counter()
            if job.seed is not None and job.temperature > 0:
                sampler = _seeded_sampler(job.temperature, job.top_p, job.seed)
            else:
                sampler = make_sampler(temp=job.temperature, top_p=job.top_p)
            [job.uid] = gen.insert(
                [job.tokens[cached:]],
                max_tokens=[job.max_tokens],
                caches=[cache] if cache is not None else None,
                samplers=[sampler],
            )
            self._live[job.uid] = job
            if self.metrics is not None:
                self.metrics.prefix(cached > 0)

    def _drop_cancelled(self, gen: Any) -> None:
        gone = [uid for uid, job in self._live.items() if job.cancelled]
        if gone:
            gen.remove(gone)
            for uid in gone:
                self._release(self._live.pop(uid))

    def _step(self, gen: Any) -> None:
        try:
            responses = gen.next_generated()
        except Exception as exc:  # noqa: BLE001 - a generation failure ends every live job
            for job in self._live.values():
                job.send("error", f"generation failed: {type(exc).__name__}: {exc}")
                self._release(job)
            self._live.clear()
            return
        if self.metrics is not None:
            self.metrics.batch(len(self._live))
        finished: list[int] = []
        running: list[int] = []  # finished here by a stop string, still in the generator
        for r in responses:
            found = self._live.get(r.uid)
            if found is None:
                continue
            job = found
            now = time.perf_counter()
            if not job.first:
                job.first = now
            if r.finish_reason != "stop":
                job.ids.append(r.token)
            finish = r.finish_reason
            if finish is None and not job.stream and not job.stops:
                continue  # nothing to release or to look for until the end: decode once then
            text = self.engine.tokenizer.decode(job.ids)
            hit = _find_stop(text, job.stops, job.emitted)
            if hit is not None:
                text, finish = text[:hit], "stop"
            if finish is None:
                if not job.stream:
                    continue
                safe = len(text) - (_held_back(text, job.stops) if job.stops else 0)
                while safe > job.emitted and text[safe - 1] == "\ufffd":
                    safe -= 1  # an incomplete UTF-8 sequence: wait for its next token
                if safe > job.emitted:
                    job.send("text", text[job.emitted : safe])
                    job.emitted = safe
                continue
            if job.stream and text[job.emitted :]:
                job.send("text", text[job.emitted :])
            job.send("done", self._reply(job, text, "stop" if finish == "stop" else "length"))
            finished.append(r.uid)
            if r.finish_reason is None:
                running.append(r.uid)
        if running:
            gen.remove(running)
        for uid in finished:
            self._release(self._live.pop(uid))

    def _reply(self, job: Job, text: str, finish: str) -> Reply:
        engine = self.engine
        n = len(job.ids) + (finish == "stop" and len(job.ids) < job.max_tokens)
        now = time.perf_counter()
        return Reply(
            text=text,
            finish_reason=finish,
            prompt_tokens=len(job.tokens),
            generation_tokens=n,
            cached_prefix_tokens=job.cached,
            ttft_s=(job.first or now) - job.created,
            tokens_per_s=(len(job.ids) - 1) / (now - job.first)
            if len(job.ids) > 1 and now > job.first
            else 0.0,
            contract=engine.contract.ref,
            fingerprint=engine.contract.fingerprint,
            checks=run_checks(text, engine.contract.spec.checks),
            adapter=engine.adapter,
        )
