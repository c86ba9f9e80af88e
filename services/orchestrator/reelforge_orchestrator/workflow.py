"""How events move a job: submitted -> admitted -> rendering -> postprocessing -> completed.

Each handler is idempotent by the job's state: a repeated or stale event finds the job already
moved on and does nothing. Billing calls happen before the transaction that records them and
are idempotent by job id, so a crash between the two is repaired by the redelivered event.
"""

from __future__ import annotations

import logging

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.jobs.v1 import jobs_pb2
from reelforge.postprocess.v1 import postprocess_pb2
from reelforge.render.v1 import render_pb2
from reelforge.usage.v1 import usage_pb2
from reelforge_core import outbox, topics
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_orchestrator import store
from reelforge_orchestrator.billing_client import BillingClient, BillingRefused
from reelforge_orchestrator.states import JobState
from reelforge_orchestrator.store import Job, StaleTransition

log = logging.getLogger(__name__)


class Workflow:
    def __init__(self, pool: asyncpg.Pool, billing: BillingClient, provider: str,
                 model_providers: dict[str, str] | None = None) -> None:
        self._pool = pool
        self._billing = billing
        self._provider = provider
        self._model_providers = model_providers or {}

    async def handle(self, event: Event) -> None:
        handler = {
            topics.JOBS_SUBMITTED: self.on_submitted,
            topics.RENDER_RESULT: self.on_render_result,
            topics.POSTPROCESS_RESULT: self.on_postprocess_result,
        }.get(event.topic)
        if handler is None:
            raise PoisonMessage(f"orchestrator does not handle topic {event.topic}")
        try:
            await handler(event)
        except StaleTransition:
            log.info("event arrived after the job moved on; ignored")

    async def on_submitted(self, event: Event) -> None:
        submitted = event.parse(jobs_pb2.JobSubmitted)
        if not submitted.job_id or not submitted.tenant_id or not submitted.HasField("spec"):
            raise PoisonMessage("JobSubmitted without job_id, tenant_id or spec")
        async with self._pool.acquire() as conn:
            await store.insert_queued(conn, submitted.job_id, submitted.tenant_id, submitted.spec)
            job = await store.load(conn, submitted.job_id)
        assert job is not None
        if job.state is JobState.QUEUED:
            await self._admit_and_dispatch(job)

    async def _admit_and_dispatch(self, job: Job) -> None:
        try:
            held = await self._billing.reserve(job.tenant_id, job.job_id, job.spec)
        except BillingRefused as refusal:
            async with self._pool.acquire() as conn, conn.transaction():
                await store.transition(conn, job, JobState.FAILED, error_code=refusal.code,
                                       error_message=refusal.message)
            return
        async with self._pool.acquire() as conn, conn.transaction():
            job = await store.transition(conn, job, JobState.ADMITTED, reserved_micros=held)
            await self._dispatch_render(conn, job)
        log.info("job admitted and dispatched", extra={"reserved_micros": held})

    async def _dispatch_render(self, conn: asyncpg.Connection, job: Job) -> None:
        job = await store.transition(conn, job, JobState.RENDERING, render_attempt=job.render_attempt + 1)
        request = render_pb2.RenderRequested(
            render_id=job.render_id, job_id=job.job_id, tenant_id=job.tenant_id,
            attempt=job.render_attempt, provider=self._model_providers.get(job.spec.model, self._provider),
            spec=job.spec,
        )
        await outbox.enqueue(conn, topics.RENDER_REQUESTED, job.job_id, request, job.tenant_id)

    async def on_render_result(self, event: Event) -> None:
        result = event.parse(render_pb2.RenderResult)
        job = await store.load(self._pool, result.job_id)
        if job is None or job.state is not JobState.RENDERING or job.render_id != result.render_id:
            log.info("render result for a job not awaiting it; ignored", extra={"render_id": result.render_id})
            return
        if not result.ok:
            await self._fail(job, result.error_code or "render_failed", result.error_message)
            return
        async with self._pool.acquire() as conn, conn.transaction():
            job = await store.transition(conn, job, JobState.POSTPROCESSING, render_output_uri=result.output_uri)
            request = postprocess_pb2.PostprocessRequested(
                job_id=job.job_id, tenant_id=job.tenant_id, input_uri=result.output_uri,
                narration=job.spec.narration, voice=job.spec.voice,
            )
            await outbox.enqueue(conn, topics.POSTPROCESS_REQUESTED, job.job_id, request, job.tenant_id)

    async def on_postprocess_result(self, event: Event) -> None:
        result = event.parse(postprocess_pb2.PostprocessResult)
        job = await store.load(self._pool, result.job_id)
        if job is None or job.state is not JobState.POSTPROCESSING:
            log.info("postprocess result for a job not awaiting it; ignored")
            return
        if not result.ok:
            await self._fail(job, result.error_code or "postprocess_failed", result.error_message)
            return
        charged = await self._billing.settle(job.tenant_id, job.job_id, result.output_seconds)
        async with self._pool.acquire() as conn, conn.transaction():
            job = await store.transition(
                conn, job, JobState.COMPLETED, output_uri=result.output_uri,
                output_seconds=result.output_seconds, charged_micros=charged,
            )
            await outbox.enqueue(conn, topics.USAGE_RECORDED, job.job_id, self._usage(job, result, charged),
                                 job.tenant_id)
        log.info("job completed", extra={"charged_micros": charged, "output_seconds": result.output_seconds})

    def _usage(self, job: Job, result: postprocess_pb2.PostprocessResult, charged: int) -> usage_pb2.UsageRecorded:
        at = Timestamp()
        at.GetCurrentTime()
        return usage_pb2.UsageRecorded(
            event_id=f"usage:{job.job_id}", tenant_id=job.tenant_id, job_id=job.job_id, model=job.spec.model,
            width=job.spec.width, height=job.spec.height, seconds=result.output_seconds, provider=self._provider,
            pool=self._provider, charged_micros=charged, at=at,
        )

    async def _fail(self, job: Job, code: str, message: str) -> None:
        await self._billing.release(job.tenant_id, job.job_id, code)
        async with self._pool.acquire() as conn, conn.transaction():
            await store.transition(conn, job, JobState.FAILED, error_code=code, error_message=message[:2000])
        log.warning("job failed", extra={"error_code": code, "error_message": message[:500]})
