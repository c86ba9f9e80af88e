"""Drives every in-flight render to a terminal state without blocking the Kafka consumer.

The consumer only records a request (store.accept) and hands it here. The tracker keeps the
in-flight set in memory (backed by the `renders` table, reloaded on start), a heap of when each
render is next due, and a fixed pool of workers that take due renders one step at a time: submit,
one status poll, or finish (download, store, report through the outbox). Polls are spread with
jitter; a provider's 429 Retry-After and webhooks move a render's next step later or earlier.
Memory grows with the in-flight set only by an InFlight each; concurrency of provider calls is
bounded by the worker count and each provider's connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
from opentelemetry import trace

from reelforge.render.v1 import render_pb2
from reelforge_core import media, telemetry
from reelforge_core.content import ContentStore, ContentStoreError
from reelforge_core.context import job_context
from reelforge_render import metrics, store
from reelforge_render.providers.base import (
    CANCELLED,
    INTERNAL,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    TIMEOUT,
    JobStatus,
    Provider,
    ProviderError,
    ProviderJob,
)
from reelforge_render.store import InFlight

log = logging.getLogger(__name__)
_tracer = telemetry.tracer("reelforge_render.tracker")

MAX_SUBMIT_RETRIES = 3  # 429/5xx on submit: retried this often (same idempotency key), then reported
MAX_BACKOFF_SECONDS = 60.0


def _urgency(job: InFlight) -> int:
    """Cancels and submissions go before routine status polls. When more polls fall due than the provider
    (or this process) can answer, polls slip and every render is polled a little later, but a new render
    is still submitted and a cancel still stops the provider's meter: with a first-come queue, 2,000 renders'
    overdue polls kept the last submissions and every cancel waiting for minutes on a loaded machine."""
    return 0 if job.cancel_requested else 1 if not job.external_id else 2


class Tracker:
    def __init__(self, pool: asyncpg.Pool, content: ContentStore, providers: Mapping[str, Provider],
                 workers: int = 128, jitter: float = 0.2, backoff_base: float = 1.0) -> None:
        self._pool = pool
        self._content = content
        self._providers = providers
        self._workers = workers
        self._jitter = jitter
        self._backoff_base = backoff_base
        self._jobs: dict[str, InFlight] = {}
        self._by_external: dict[tuple[str, str], str] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        # Steps waiting for a worker, most urgent first (see _urgency), then in the order they fell due.
        self._ready: asyncio.PriorityQueue[tuple[int, int, InFlight]] = asyncio.PriorityQueue()
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self.polls = 0  # status polls made, for metrics and the benchmark
        self.webhooks = 0  # provider webhooks read in place of a poll
        self.finished = 0

    # --- what the rest of the adapter calls -----------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    def track(self, job: InFlight) -> None:
        """Drives the render from now on; a render already tracked is left as it is (the consumer's accept
        and the adopt loop can both load the same new row: replacing the object whose step is running
        would orphan its next step)."""
        if job.render_id in self._jobs:
            return
        self._jobs[job.render_id] = job
        if job.external_id:
            self._by_external[(job.provider, job.external_id)] = job.render_id
        self._schedule(job, 0.0)

    def request_cancel(self, render_id: str) -> None:
        job = self._jobs.get(render_id)
        if job is not None:
            job.cancel_requested = True
            self._schedule(job, 0.0)

    def push(self, provider: str, body: Any) -> bool:
        """A provider's webhook (verified by the gateway) about one of its jobs: its body is read in place of
        that render's next poll, now, by the same rules (`Provider.webhook_status`) and in the same worker
        step, so a webhook and a poll reporting one state have one effect. False if no tracked render is
        the subject (finished already, another instance's, or not ours): nothing to do."""
        adapter = self._providers.get(provider)
        external_id = adapter.webhook_subject(body) if adapter is not None else None
        render_id = self._by_external.get((provider, external_id)) if external_id else None
        job = self._jobs.get(render_id) if render_id else None
        if job is None:
            return False
        job.pushed = body
        self._schedule(job, 0.0)
        return True

    async def resume(self) -> int:
        jobs = await store.load_in_flight(self._pool)
        for job in jobs:
            self.track(job)
        return len(jobs)

    async def adopt(self) -> int:
        """Tracks unfinished renders this process does not know yet (accepted by another instance,
        or left by a dead one) and picks up cancels recorded elsewhere; returns how many it adopted."""
        adopted = 0
        for job in await store.load_in_flight(self._pool):
            known = self._jobs.get(job.render_id)
            if known is None:
                self.track(job)
                adopted += 1
            elif job.cancel_requested and not known.cancel_requested:
                self.request_cancel(job.render_id)
        return adopted

    def reset(self) -> None:
        """Forgets everything in memory (after losing the tracking lease); `resume` reloads it."""
        self._jobs.clear()
        self._by_external.clear()
        self._heap.clear()
        self._busy.clear()
        self._ready = asyncio.PriorityQueue()

    async def run(self) -> None:
        workers = [asyncio.create_task(self._work(), name=f"render-worker-{i}") for i in range(self._workers)]
        try:
            await self._dispatch()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    # --- scheduling -----------------------------------------------------------------------------

    def _schedule(self, job: InFlight, delay: float) -> None:
        job.due = time.monotonic() + max(0.0, delay)
        self._seq += 1
        heapq.heappush(self._heap, (job.due, self._seq, job.render_id))
        self._wake.set()

    def _jittered(self, seconds: float) -> float:
        return seconds * random.uniform(1 - self._jitter, 1 + self._jitter)

    def _backoff(self, job: InFlight) -> float:
        return float(min(MAX_BACKOFF_SECONDS, self._backoff_base * 2.0 ** min(job.errors, 10)))

    async def _dispatch(self) -> None:
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                due, _, render_id = heapq.heappop(self._heap)
                job = self._jobs.get(render_id)
                # Stale entries (rescheduled since) and renders already in a worker's hands are skipped;
                # a busy render is rescheduled by its worker when the step ends.
                if job is None or due != job.due or render_id in self._busy:
                    continue
                self._busy.add(render_id)
                self._seq += 1
                self._ready.put_nowait((_urgency(job), self._seq, job))
            timeout = self._heap[0][0] - now if self._heap else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self) -> None:
        while True:
            _, _, job = await self._ready.get()
            try:
                with job_context(job_id=job.job_id, tenant_id=job.tenant_id):
                    await self._step(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("render step failed unexpectedly; retrying", extra={"render_id": job.render_id})
                job.errors += 1
                self._schedule(job, self._backoff(job))
            finally:
                self._busy.discard(job.render_id)
                if job.render_id in self._jobs and (job.due <= time.monotonic() or job.cancel_requested):
                    self._schedule(job, 0.0)  # something (cancel, webhook) asked for it while it was busy

    # --- one step of one render -----------------------------------------------------------------

    async def _step(self, job: InFlight) -> None:
        provider = self._providers.get(job.provider)
        if provider is None:
            await self._fail(job, ProviderError(PROVIDER_UNAVAILABLE, f"provider {job.provider!r} is not configured"))
            return
        handle = ProviderJob(job.render_id, job.spec, job.external_id)
        if job.cancel_requested:
            await self._best_effort_cancel(provider, handle)
            await self._fail(job, ProviderError(CANCELLED, "cancelled on request"))
            return
        if time.time() >= job.deadline:
            await self._best_effort_cancel(provider, handle)
            await self._fail(job, ProviderError(TIMEOUT, f"{job.provider} did not finish the render in time"))
            return
        if not job.external_id and job.submit_pending and not provider.idempotent_submit:
            # A submit went out and we never recorded its answer (crash, timeout): it may have started a job
            # there. Repeating it could start a second one, so this attempt ends; the orchestrator retries
            # with a new attempt (a new render id) or another provider.
            await self._fail(job, ProviderError(PROVIDER_UNAVAILABLE, f"{job.provider}: the outcome of the "
                                                "submission is unknown; not submitting it twice"))
            return
        try:
            if not job.external_id:
                await self._submit(provider, job, handle)
            else:
                await self._poll(provider, job, handle)
        except ProviderError as exc:
            await self._on_error(job, exc)

    async def _submit(self, provider: Provider, job: InFlight, handle: ProviderJob) -> None:
        guarded = not provider.idempotent_submit
        if guarded:
            await store.set_submit_pending(self._pool, job.render_id, True)
            job.submit_pending = True
        try:
            external_id = await provider.submit(handle)
        except ProviderError as exc:
            if guarded and not exc.maybe_applied:  # the provider answered: nothing was started
                await store.set_submit_pending(self._pool, job.render_id, False)
                job.submit_pending = False
            raise
        job.external_id, job.submit_pending = external_id, False
        job.errors = 0
        self._by_external[(job.provider, job.external_id)] = job.render_id
        await store.mark_submitted(self._pool, job.render_id, job.external_id)
        log.info("render submitted", extra={"render_id": job.render_id, "provider": job.provider})
        self._schedule(job, self._jittered(provider.poll_interval))

    async def _poll(self, provider: Provider, job: InFlight, handle: ProviderJob) -> None:
        pushed, job.pushed = job.pushed, None
        status = provider.webhook_status(handle, pushed) if pushed is not None else None
        if status is None:
            status = await provider.status(handle)
            self.polls += 1
            job.polls += 1
        else:
            self.webhooks += 1
        job.errors = 0
        if status.state == "succeeded":
            await self._succeed(provider, job, handle, status)
        elif status.state == "failed":
            await self._fail(job, status.error or ProviderError(INTERNAL, f"{job.provider} reported a failure"))
        elif status.state == "cancelled":
            await self._fail(job, ProviderError(PROVIDER_UNAVAILABLE, f"{job.provider} cancelled the render"))
        else:
            job.progress = status.progress
            self._schedule(job, self._jittered(provider.poll_interval))

    async def _on_error(self, job: InFlight, exc: ProviderError) -> None:
        transient = exc.code in (RATE_LIMITED, PROVIDER_UNAVAILABLE)
        # While polling, transient errors are waited out until the deadline; on submit only a few times,
        # then the orchestrator hears about it and may fail over to another provider.
        if transient and (job.external_id or job.errors < MAX_SUBMIT_RETRIES):
            job.errors += 1
            delay = exc.retry_after if exc.retry_after is not None else self._backoff(job)
            log.info("provider busy; retrying later", extra={
                "render_id": job.render_id, "error_code": exc.code, "retry_in": round(delay, 2)})
            self._schedule(job, self._jittered(delay) if exc.retry_after is None else delay + random.uniform(0, 0.1))
            return
        await self._fail(job, exc)

    async def _best_effort_cancel(self, provider: Provider, handle: ProviderJob) -> None:
        try:
            await provider.cancel(handle)
        except ProviderError as exc:
            log.warning("cancel at the provider failed", extra={"render_id": handle.render_id, "error": exc.message})

    # --- terminal ---------------------------------------------------------------------------------

    def _result(self, job: InFlight) -> render_pb2.RenderResult:
        return render_pb2.RenderResult(render_id=job.render_id, job_id=job.job_id, tenant_id=job.tenant_id,
                                       provider=job.provider, provider_job_id=job.external_id)

    async def _succeed(self, provider: Provider, job: InFlight, handle: ProviderJob, status: JobStatus) -> None:
        result = self._result(job)
        try:
            with tempfile.TemporaryDirectory(dir=self._content.scratch_dir()) as scratch:
                out = Path(scratch) / "render.mp4"
                await provider.fetch_output(handle, status, out)
                try:
                    probed = await media.probe(out)
                    await media.check_complete(out)
                except media.MediaError as exc:
                    message = f"{job.provider} returned an unreadable video: {exc.message}"
                    raise ProviderError(INTERNAL, message) from exc
                try:
                    stored = await asyncio.to_thread(self._content.put, out)
                except ContentStoreError as exc:  # retried like an unavailable provider, then failed over
                    raise ProviderError(PROVIDER_UNAVAILABLE, f"content store: {exc}") from exc
        except ProviderError as exc:
            if exc.code in (RATE_LIMITED, PROVIDER_UNAVAILABLE) and time.time() < job.deadline:
                job.errors += 1
                self._schedule(job, exc.retry_after if exc.retry_after is not None else self._backoff(job))
                return
            await self._fail(job, exc)
            return
        result.ok = True
        result.output_uri, result.sha256 = stored.uri, stored.sha256
        result.output_seconds = probed.duration_s or 0.0
        result.provider_cost_micros = status.cost.micros
        result.provider_cost_currency = status.cost.currency
        result.gpus, result.gpu_seconds = status.cost.gpus, status.cost.gpu_seconds
        await self._finish(job, result)

    async def _fail(self, job: InFlight, exc: ProviderError) -> None:
        result = self._result(job)
        result.ok = False
        result.error_code, result.error_message = exc.code, exc.message
        result.retriable = exc.retriable
        if exc.retry_after is not None:
            result.retry_after_seconds = exc.retry_after
        await self._finish(job, result)

    async def _finish(self, job: InFlight, result: render_pb2.RenderResult) -> None:
        parent = telemetry.context_from(job.trace_headers)
        with _tracer.start_as_current_span(
            f"render {job.provider}", context=parent, kind=trace.SpanKind.INTERNAL,
            attributes={"reelforge.job_id": job.job_id, "reelforge.render_id": job.render_id,
                        "reelforge.provider": job.provider, "reelforge.ok": result.ok,
                        "reelforge.polls": job.polls},
        ):
            await store.finish(self._pool, job, result)
        self._jobs.pop(job.render_id, None)
        self._by_external.pop((job.provider, job.external_id), None)
        self.finished += 1
        metrics.record(job.provider, result.ok, result.error_code, result.output_seconds, result.gpu_seconds,
                       result.provider_cost_micros, model=job.spec.model,
                       elapsed_seconds=time.time() - job.accepted_at if job.accepted_at else None)
        if result.ok:
            log.info("render done", extra={"render_id": job.render_id, "uri": result.output_uri})
        else:
            log.warning("render failed", extra={"render_id": job.render_id, "error_code": result.error_code,
                                                "error_message": result.error_message})
