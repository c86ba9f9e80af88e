"""How events move a job: submitted -> admitted (waits for capacity) -> rendering -> postprocessing
-> completed, or failed, cancelled, expired.

Each handler is idempotent by the job's state: a repeated or stale event finds the job already
moved on and does nothing. Billing calls happen before the transaction that records them and are
idempotent by job id, so a crash between the two is repaired by the redelivered event. The engine
(the scheduler) decides when and where a job renders; handlers tell it when slots free up.
"""

from __future__ import annotations

import json
import logging

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.jobs.v1 import jobs_pb2
from reelforge.postprocess.v1 import postprocess_pb2
from reelforge.render.v1 import render_pb2
from reelforge.usage.v1 import usage_pb2
from reelforge_core import outbox, telemetry, topics
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_orchestrator import job_metrics, store
from reelforge_orchestrator.billing_client import BillingClient, BillingRefused
from reelforge_orchestrator.engine import Engine, as_datetime, sched_job
from reelforge_orchestrator.leader import check_epoch
from reelforge_orchestrator.states import JobState
from reelforge_orchestrator.store import Job, StaleTransition

log = logging.getLogger(__name__)

TOPICS = [topics.JOBS_SUBMITTED, topics.JOBS_CANCEL_REQUESTED, topics.RENDER_RESULT, topics.POSTPROCESS_RESULT]
QC_RENDER_ATTEMPTS = 2  # renders per job while postprocess QC keeps asking for a re-render


def wants_rerender(job: Job, result: postprocess_pb2.PostprocessResult) -> bool:
    """Postprocess QC found a fault a new render may fix (black, frozen, truncated video) and the
    job has render attempts left; otherwise the job fails with the result's code (`qc_failed`)."""
    return not result.ok and result.rerender and job.render_attempt < QC_RENDER_ATTEMPTS


class Workflow:
    def __init__(self, pool: asyncpg.Pool, billing: BillingClient, engine: Engine) -> None:
        self._pool = pool
        self._billing = billing
        self._engine = engine

    async def handle(self, event: Event) -> None:
        handler = {
            topics.JOBS_SUBMITTED: self.on_submitted,
            topics.JOBS_CANCEL_REQUESTED: self.on_cancel_requested,
            topics.RENDER_RESULT: self.on_render_result,
            topics.POSTPROCESS_RESULT: self.on_postprocess_result,
        }.get(event.topic)
        if handler is None:
            raise PoisonMessage(f"orchestrator does not handle topic {event.topic}")
        try:
            await handler(event)
        except StaleTransition:
            log.info("event arrived after the job moved on; ignored")

    # -- admission ---------------------------------------------------------------------------------

    async def on_submitted(self, event: Event) -> None:
        submitted = event.parse(jobs_pb2.JobSubmitted)
        if not submitted.job_id or not submitted.tenant_id or not submitted.HasField("spec"):
            raise PoisonMessage("JobSubmitted without job_id, tenant_id or spec")
        async with self._pool.acquire() as conn:
            await store.insert_queued(conn, submitted.job_id, submitted.tenant_id, submitted.spec)
            job = await store.load(conn, submitted.job_id)
        assert job is not None
        if job.state is JobState.QUEUED:
            await self._admit(job)

    async def _admit(self, job: Job) -> None:
        spec = job.spec
        scheduler = self._engine.scheduler
        rejection = scheduler.check(job.tenant_id, spec.model, spec.seconds, spec.width, spec.height)
        if rejection is not None:
            await self._end(job, JobState.FAILED, rejection.code, rejection.message, release=False)
            return
        try:
            held = await self._billing.reserve(job.tenant_id, job.job_id, spec)
        except BillingRefused as refusal:
            await self._end(job, JobState.FAILED, refusal.code, refusal.message, release=False)
            return
        async with self._engine.lock:
            now = self._engine.clock()
            contract = scheduler.contract_for(job.tenant_id)
            deadline: float | None = None
            if spec.HasField("deadline"):
                deadline = spec.deadline.seconds + spec.deadline.nanos / 1e9
            elif contract is not None and contract.default_deadline_seconds is not None:
                deadline = now + contract.default_deadline_seconds
            async with self._pool.acquire() as conn, conn.transaction():
                await check_epoch(conn, self._engine.epoch)
                job = await store.transition(
                    conn, job, JobState.ADMITTED, reserved_micros=held, admitted_at=as_datetime(now),
                    deadline=as_datetime(deadline) if deadline is not None else None,
                    trace_headers=json.dumps(telemetry.inject_headers()),
                )
            rejection = scheduler.submit(sched_job(job, now, deadline), now)
        if rejection is not None:  # the quota ran out between the check and now
            await self._end(job, JobState.FAILED, rejection.code, rejection.message, release=True)
            return
        self._engine.wake()
        log.info("job admitted; waiting for capacity", extra={"reserved_micros": held})

    # -- render and postprocess results --------------------------------------------------------------

    async def on_render_result(self, event: Event) -> None:
        result = event.parse(render_pb2.RenderResult)
        job = await store.load(self._pool, result.job_id)
        if job is None or job.state is not JobState.RENDERING or job.render_id != result.render_id \
                or job.pool_id is None:
            log.info("render result for a job not awaiting it; ignored", extra={"render_id": result.render_id})
            return
        job_metrics.on_render_result(job.pool_id, job.provider or "", result.ok)
        engine = self._engine
        if result.ok:
            async with engine.lock:
                engine.scheduler.render_done(job.job_id, engine.clock(), ok=True,
                                             output_seconds=result.output_seconds)
                async with self._pool.acquire() as conn, conn.transaction():
                    job = await store.transition(conn, job, JobState.POSTPROCESSING,
                                                 render_output_uri=result.output_uri)
                    request = postprocess_pb2.PostprocessRequested(
                        job_id=job.job_id, tenant_id=job.tenant_id, input_uri=result.output_uri,
                        narration=job.spec.narration, voice=job.spec.voice,
                        options=job.spec.postprocess_options, render_id=job.render_id,
                        free_tier=self._free_tier(job.tenant_id),
                    )
                    await outbox.enqueue(conn, topics.POSTPROCESS_REQUESTED, job.job_id, request, job.tenant_id)
            engine.wake()
            return
        code = result.error_code or "render_failed"
        async with engine.lock:
            now = engine.clock()
            outcome = engine.scheduler.render_done(job.job_id, now, ok=False, retriable=result.retriable, code=code,
                                                   message=result.error_message)
            if outcome is not None and outcome.kind == "retry":
                async with self._pool.acquire() as conn, conn.transaction():
                    await store.update_fields(conn, job, pool_id=None, retry_at=as_datetime(now + outcome.retry_in),
                                              avoid_pools=sorted(outcome.job.avoid))
                log.warning("render failed; will retry on another pool",
                            extra={"error_code": code, "pool": job.pool_id, "retry_in_s": outcome.retry_in})
                engine.wake()
                return
        message = outcome.message if outcome is not None and outcome.message else result.error_message
        await self._end(job, JobState.FAILED, code, message, release=True)
        engine.wake()

    async def on_postprocess_result(self, event: Event) -> None:
        result = event.parse(postprocess_pb2.PostprocessResult)
        job = await store.load(self._pool, result.job_id)
        if job is None or job.state is not JobState.POSTPROCESSING or result.render_id not in ("", job.render_id):
            log.info("postprocess result for a job not awaiting it; ignored")
            return
        if wants_rerender(job, result):
            await self._rerender(job)
            log.warning("postprocess QC failed; re-rendering", extra={"error_message": result.error_message[:500]})
            return
        if not result.ok:
            await self._end(job, JobState.FAILED, result.error_code or "postprocess_failed", result.error_message,
                            release=True)
            return
        charged = await self._billing.settle(job.tenant_id, job.job_id, result.output_seconds)
        async with self._engine.lock:
            async with self._pool.acquire() as conn, conn.transaction():
                job = await store.transition(
                    conn, job, JobState.COMPLETED, output_uri=result.output_uri,
                    output_seconds=result.output_seconds, charged_micros=charged,
                )
                await outbox.enqueue(conn, topics.USAGE_RECORDED, job.job_id, self._usage(job, result, charged),
                                     job.tenant_id)
            self._engine.scheduler.job_done(job.job_id, self._engine.clock())
        self._engine.wake()
        log.info("job completed", extra={"charged_micros": charged, "output_seconds": result.output_seconds})

    def _free_tier(self, tenant_id: str) -> bool:
        contract = self._engine.scheduler.contract_for(tenant_id)
        return contract is not None and contract.tier == "free"

    async def _rerender(self, job: Job) -> None:
        """Back to the queue for another render (QC asked); it waits for a pool slot like any job."""
        engine = self._engine
        async with engine.lock:
            now = engine.clock()
            async with self._pool.acquire() as conn, conn.transaction():
                await check_epoch(conn, engine.epoch)
                job = await store.transition(conn, job, JobState.RENDERING, pool_id=None, retry_at=None)
            engine.scheduler.job_done(job.job_id, now)
            deadline = job.deadline.timestamp() if job.deadline is not None else None
            engine.scheduler.restore_waiting(sched_job(job, now, deadline), now)
        engine.wake()

    def _usage(self, job: Job, result: postprocess_pb2.PostprocessResult, charged: int) -> usage_pb2.UsageRecorded:
        at = Timestamp()
        at.GetCurrentTime()
        return usage_pb2.UsageRecorded(
            event_id=f"usage:{job.job_id}", tenant_id=job.tenant_id, job_id=job.job_id, model=job.spec.model,
            width=job.spec.width, height=job.spec.height, seconds=result.output_seconds,
            provider=job.provider or "", pool=job.pool_id or "", charged_micros=charged, at=at,
        )

    # -- cancellation ----------------------------------------------------------------------------------

    async def on_cancel_requested(self, event: Event) -> None:
        request = event.parse(jobs_pb2.JobCancelRequested)
        if not request.job_id:
            raise PoisonMessage("JobCancelRequested without job_id")
        job = await store.load(self._pool, request.job_id)
        if job is None or job.state.terminal:
            log.info("cancel for a job that is unknown or finished; ignored", extra={"job_id": request.job_id})
            return
        if request.tenant_id and request.tenant_id != job.tenant_id:
            log.warning("cancel from another tenant; ignored", extra={"job_id": request.job_id})
            return
        await self._end(job, JobState.CANCELLED, "cancelled", request.reason or "cancelled at the partner's request",
                        release=job.reserved_micros is not None)
        self._engine.wake()

    # -- endings -----------------------------------------------------------------------------------------

    async def _end(self, job: Job, state: JobState, code: str, message: str, release: bool) -> None:
        """Ends the job: releases the billing hold, frees its scheduler place, records the state, and
        asks the provider to stop a render in flight."""
        if release:
            await self._billing.release(job.tenant_id, job.job_id, code)
        engine = self._engine
        async with engine.lock:
            job = await store.load(self._pool, job.job_id) or job
            if job.state.terminal:
                return
            engine.scheduler.cancel(job.job_id, engine.clock())
            async with self._pool.acquire() as conn, conn.transaction():
                rendering = job.state is JobState.RENDERING and job.pool_id is not None
                job = await store.transition(conn, job, state, error_code=code, error_message=message[:2000])
                if rendering and state is JobState.CANCELLED:
                    cancel = render_pb2.RenderCancelRequested(
                        render_id=job.render_id, job_id=job.job_id, tenant_id=job.tenant_id,
                        provider=job.provider or "",
                    )
                    await outbox.enqueue(conn, topics.RENDER_CANCEL_REQUESTED, job.job_id, cancel, job.tenant_id)
        log.warning("job ended", extra={"state": state.value, "error_code": code, "error_message": message[:500]})
