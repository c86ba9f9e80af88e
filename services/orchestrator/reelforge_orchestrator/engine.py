"""The live scheduler: the pure core fed from Postgres, its decisions written back to Postgres.

Only the leader runs an engine. It rebuilds the scheduler from the jobs table when it takes over,
reloads contracts and pools every few seconds (changes apply without a restart), and on every
wake-up (a job admitted, a slot freed) or tick dispatches what fits. Each dispatch is one
transaction that checks the leader epoch, moves the job to `rendering` on its pool and enqueues the
RenderRequested through the outbox, so a job is dispatched once even across a takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from reelforge.jobs.v1 import jobs_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import outbox, telemetry, topics
from reelforge_core.context import job_context
from reelforge_orchestrator import config_store, store
from reelforge_orchestrator.billing_client import BillingClient
from reelforge_orchestrator.job_metrics import tenant_label
from reelforge_orchestrator.leader import LostLeadership, check_epoch
from reelforge_orchestrator.scheduling.fair_queue import Decisions, Scheduler, SchedulingPolicy
from reelforge_orchestrator.scheduling.router import Job as SchedJob
from reelforge_orchestrator.states import JobState
from reelforge_orchestrator.store import Job, StaleTransition

log = logging.getLogger(__name__)

DISPATCHED = Counter("reelforge_scheduler_dispatched_total", "Renders dispatched, by pool", ["pool"])
ENDED = Counter("reelforge_scheduler_ended_total", "Jobs the scheduler ended without a render, by code", ["code"])
QUEUE_DEPTH = Gauge("reelforge_scheduler_queue_depth", "Jobs waiting for capacity, by tier", ["tier"])
OLDEST_WAIT = Gauge("reelforge_scheduler_oldest_wait_seconds", "Longest current wait, by tier", ["tier"])
POOL_IN_USE = Gauge("reelforge_pool_in_use", "Slots (or GPUs) busy, by pool", ["pool"])
POOL_CAPACITY = Gauge("reelforge_pool_capacity", "Slots (or GPUs), by pool", ["pool"])
POOL_UTILISATION = Gauge("reelforge_pool_utilisation_ratio", "Busy share of the pool, by pool", ["pool"])
POOL_CIRCUIT_OPEN = Gauge("reelforge_pool_circuit_open", "1 when the pool's breaker is not closed", ["pool"])
WAIT_SECONDS = Histogram("reelforge_scheduler_wait_seconds", "Admission to dispatch, by tier", ["tier"],
                         buckets=(0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
TENANT_WAITING = Gauge("reelforge_scheduler_tenant_waiting", "Jobs waiting for capacity, by tenant and tier",
                       ["tenant", "tier"])
TENANT_OLDEST_WAIT = Gauge("reelforge_scheduler_tenant_oldest_wait_seconds", "Longest current wait, by tenant and tier",
                           ["tenant", "tier"])
TENANT_IN_FLIGHT = Gauge("reelforge_scheduler_tenant_in_flight", "Jobs rendering or postprocessing, by tenant",
                         ["tenant"])
POOL_PAUSED = Gauge("reelforge_pool_paused", "1 while the pool is paused", ["pool"])
POOL_DRAINING = Gauge("reelforge_pool_draining", "1 while the pool is draining", ["pool"])
POOL_ERROR_RATE = Gauge("reelforge_pool_error_rate", "Failed share of the pool's recent renders (breaker window)",
                        ["pool"])
POOL_GPUS = Gauge("reelforge_pool_gpus", "GPUs of a self-hosted GPU pool (0 for a provider's slot pool)", ["pool"])
POOL_GPUS_IN_USE = Gauge("reelforge_pool_gpus_in_use", "GPUs busy rendering, by pool (0 for slot pools)", ["pool"])
POOL_GPU_SECONDS_IN_USE = Gauge(
    "reelforge_pool_gpu_seconds_in_use",
    "GPU-seconds the renders now running on the pool are expected to take in all (0 for slot pools)", ["pool"])
POOL_GPU_SECONDS = Counter(
    "reelforge_pool_gpu_seconds_total",
    "GPU-seconds held by renders: GPUs in use integrated over time, by pool (its rate is the mean GPUs busy)",
    ["pool"])
JOBS_ACTIVE = Gauge("reelforge_jobs_active", "Unfinished jobs the leader schedules, by state: admitted (waiting for "
                    "capacity, retries included), rendering, postprocessing", ["state"])
IS_LEADER = Gauge("reelforge_orchestrator_leader", "1 on the instance that leads")


_tracer = trace.get_tracer(__name__)


def _job_trace(job: Job | None) -> otel_context.Context | None:
    """The trace of the request that admitted the job, so the dispatch joins it."""
    if job is None or not job.trace_headers:
        return None
    try:
        return telemetry.context_from(json.loads(job.trace_headers))
    except ValueError:
        return None


def epoch_seconds(at: datetime | None) -> float:
    return at.timestamp() if at is not None else time.time()


def as_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def sched_job(job: Job, enqueued_at: float, deadline: float | None) -> SchedJob:
    spec = job.spec
    return SchedJob(job.job_id, job.tenant_id, spec.model, spec.seconds, spec.width, spec.height, enqueued_at,
                    deadline, attempt=job.render_attempt)


class Engine:
    def __init__(self, pool: asyncpg.Pool, billing: BillingClient, epoch: int, policy: SchedulingPolicy | None = None,
                 tick_seconds: float = 0.25, reload_seconds: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self._billing = billing
        self.epoch = epoch
        self._policy = policy or SchedulingPolicy()
        self._tick = tick_seconds
        self._reload = reload_seconds
        self.clock = clock
        self.lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.scheduler = Scheduler([], [], {}, self._policy)
        self._observed_at = 0.0
        self._gpus_busy: dict[str, tuple[float, int]] = {}  # pool -> (when observed, GPUs busy then)
        self._waiting_labels: set[tuple[str, str]] = set()  # (tenant, tier) with a nonzero waiting gauge

    def wake(self) -> None:
        self._wake.set()

    # -- taking over ---------------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Loads the configuration and every unfinished job: waiting, rendering, postprocessing."""
        async with self.lock:
            await self._load_config()
            now = self.clock()
            jobs = await store.active_jobs(self._pool)
            waiting = rendering = 0
            for job in jobs:
                if job.state is JobState.ADMITTED or (job.state is JobState.RENDERING and job.pool_id is None):
                    item = sched_job(job, epoch_seconds(job.admitted_at or job.created_at),
                                     epoch_seconds(job.deadline) if job.deadline else None)
                    item.avoid = frozenset(job.avoid_pools)
                    item.not_before = epoch_seconds(job.retry_at) if job.retry_at else 0.0
                    self.scheduler.restore_waiting(item, now)
                    waiting += 1
                elif job.state is JobState.RENDERING:
                    item = sched_job(job, epoch_seconds(job.admitted_at), None)
                    self.scheduler.restore_in_flight(item, job.pool_id, epoch_seconds(job.dispatched_at), now)
                    rendering += 1
                elif job.state is JobState.POSTPROCESSING:
                    item = sched_job(job, epoch_seconds(job.admitted_at), None)
                    self.scheduler.restore_in_flight(item, None, epoch_seconds(job.dispatched_at), now)
            rows = await self._pool.fetch(
                "SELECT tenant_id, spec, admitted_at FROM jobs WHERE admitted_at >= date_trunc('month', now())"
                " AND state NOT IN ('failed', 'cancelled', 'expired')")
            for row in rows:
                spec = jobs_pb2.JobSpec()
                spec.ParseFromString(row["spec"])
                self.scheduler.restore_quota_usage(row["tenant_id"], spec.seconds, row["admitted_at"].timestamp(), now)
        log.info("scheduler rebuilt", extra={"waiting": waiting, "rendering": rendering, "epoch": self.epoch})
        self.wake()

    async def _load_config(self) -> None:
        config = await config_store.load(self._pool)
        scheduler = self.scheduler
        scheduler.default_contract = config.default_contract
        explicit = {c.tenant_id: c for c in config.contracts}
        for tenant_id in list(scheduler.tenants):
            if tenant_id not in explicit:  # on the default contract, which may have changed
                contract = scheduler.contract_for_default(tenant_id)
                if contract is not None and scheduler.tenants[tenant_id].contract != contract:
                    scheduler.upsert_contract(contract)
        for contract in config.contracts:
            current = scheduler.tenants.get(contract.tenant_id)
            if current is None or current.contract != contract:
                scheduler.upsert_contract(contract)
        for spec in config.pools:
            current_pool = scheduler.pools.get(spec.pool_id)
            if current_pool is None or current_pool.spec != spec:
                scheduler.upsert_pool(spec)
            paused, draining = config.pool_modes[spec.pool_id]
            scheduler.set_pool_mode(spec.pool_id, paused, draining)
        if config.routes != scheduler.router.routes:
            scheduler.set_routes(config.routes)

    async def reload(self) -> None:
        async with self.lock:
            await self._load_config()
        self.wake()

    # -- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        IS_LEADER.set(1)
        next_reload = time.monotonic() + self._reload
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._tick)
                self._wake.clear()
                if time.monotonic() >= next_reload:
                    await self.reload()
                    next_reload = time.monotonic() + self._reload
                await self.step()
        finally:
            IS_LEADER.set(0)

    async def step(self) -> Decisions:
        async with self.lock:
            decisions = self.scheduler.tick(self.clock())
            for dispatch in decisions.dispatched:
                await self._write_dispatch(dispatch.job, dispatch.pool_id, dispatch.provider, dispatch.attempt)
            for ended in decisions.ended:
                await self._write_end(ended.job.job_id, JobState(ended.state), ended.code, ended.message)
            if time.monotonic() - self._observed_at >= 1.0 or decisions.dispatched or decisions.ended:
                self._observe()
        return decisions

    async def _write_dispatch(self, item: SchedJob, pool_id: str, provider: str, attempt: int) -> None:
        now = self.clock()
        with job_context(job_id=item.job_id, tenant_id=item.tenant_id):
            async with self._pool.acquire() as conn, conn.transaction():
                job = await self._load_fenced(conn, item.job_id)
                with _tracer.start_as_current_span(
                    "dispatch render", context=_job_trace(job),
                    attributes={"reelforge.job_id": item.job_id, "reelforge.pool": pool_id},
                ):
                    dispatched = await self._dispatch_in_transaction(conn, item, job, pool_id, provider, attempt, now)
            if not dispatched:
                return
            contract = self.scheduler.contract_for(item.tenant_id)
            WAIT_SECONDS.labels(contract.tier if contract else "").observe(max(0.0, now - item.enqueued_at))
            DISPATCHED.labels(pool_id).inc()
            log.info("render dispatched", extra={"pool": pool_id, "provider": provider, "attempt": attempt})

    async def _load_fenced(self, conn: asyncpg.Connection, job_id: str) -> Job | None:
        """The job, locked, after checking this engine still leads: one round trip on the hot path."""
        row = await conn.fetchrow(
            "SELECT j.*, l.epoch AS leader_epoch FROM leader_lease l JOIN jobs j ON j.job_id = $1"
            " WHERE l.id = 1 FOR SHARE OF l FOR UPDATE OF j", job_id)
        if row is None:
            await check_epoch(conn, self.epoch)
            return None
        if row["leader_epoch"] != self.epoch:
            raise LostLeadership(f"epoch {self.epoch} superseded by {row['leader_epoch']}")
        return Job.from_row(row)

    async def _dispatch_in_transaction(self, conn: asyncpg.Connection, item: SchedJob, job: Job | None, pool_id: str,
                                       provider: str, attempt: int, now: float) -> bool:
        waiting = job is not None and (job.state is JobState.ADMITTED or (
            job.state is JobState.RENDERING and job.pool_id is None))
        if job is None or not waiting:
            log.warning("dispatch decided for a job no longer waiting; undone")
            self.scheduler.job_done(item.job_id, now)
            return False
        job = await store.transition(
            conn, job, JobState.RENDERING, render_attempt=attempt, pool_id=pool_id, provider=provider,
            dispatched_at=as_datetime(now), retry_at=None, avoid_pools=sorted(item.avoid),
        )
        request = render_pb2.RenderRequested(
            render_id=job.render_id, job_id=job.job_id, tenant_id=job.tenant_id, attempt=attempt,
            provider=provider, spec=job.spec,
        )
        await outbox.enqueue(conn, topics.RENDER_REQUESTED, job.job_id, request, job.tenant_id)
        return True

    async def _write_end(self, job_id: str, state: JobState, code: str, message: str) -> None:
        job = await store.load(self._pool, job_id)
        if job is None or job.state.terminal:
            return
        with job_context(job_id=job.job_id, tenant_id=job.tenant_id):
            if job.reserved_micros is not None:
                await self._billing.release(job.tenant_id, job.job_id, code)
            async with self._pool.acquire() as conn, conn.transaction():
                await check_epoch(conn, self.epoch)
                try:
                    await store.transition(conn, job, state, error_code=code, error_message=message)
                except StaleTransition:
                    return
            ENDED.labels(code).inc()
            log.warning("job ended by the scheduler", extra={"state": state.value, "error_code": code})

    def _observe(self) -> None:
        self._observed_at = time.monotonic()
        now = self.clock()
        depth: dict[str, int] = {}
        oldest: dict[str, float] = {}
        # Tenants past the label limit share "other": their figures add up (oldest wait: the longest).
        tenant_waiting: dict[tuple[str, str], tuple[int, float]] = {}
        for tenant_id, (tier, waiting, wait) in self.scheduler.queue_depths(now).items():
            depth[tier] = depth.get(tier, 0) + waiting
            oldest[tier] = max(oldest.get(tier, 0.0), wait)
            key = (tenant_label(tenant_id), tier)
            count, longest = tenant_waiting.get(key, (0, 0.0))
            tenant_waiting[key] = (count + waiting, max(longest, wait))
        for key, (count, longest) in tenant_waiting.items():
            TENANT_WAITING.labels(*key).set(count)
            TENANT_OLDEST_WAIT.labels(*key).set(longest)
        for labels in self._waiting_labels - tenant_waiting.keys():  # no longer waiting: zero, not the last value
            TENANT_WAITING.labels(*labels).set(0)
            TENANT_OLDEST_WAIT.labels(*labels).set(0)
        self._waiting_labels = set(tenant_waiting)
        in_flight: dict[str, int] = {}
        for tenant_id, tenant in self.scheduler.tenants.items():
            label = tenant_label(tenant_id)
            in_flight[label] = in_flight.get(label, 0) + tenant.in_flight
        for label, count in in_flight.items():
            TENANT_IN_FLIGHT.labels(label).set(count)
        for tier in {"enterprise", "standard", "free", *depth}:
            QUEUE_DEPTH.labels(tier).set(depth.get(tier, 0))
            OLDEST_WAIT.labels(tier).set(oldest.get(tier, 0.0))
        for pool_id, pool in self.scheduler.pools.items():
            POOL_IN_USE.labels(pool_id).set(pool.in_use)
            POOL_CAPACITY.labels(pool_id).set(pool.capacity)
            POOL_UTILISATION.labels(pool_id).set(pool.utilisation)
            POOL_CIRCUIT_OPEN.labels(pool_id).set(0 if pool.circuit.state == "closed" else 1)
            POOL_PAUSED.labels(pool_id).set(1 if pool.paused else 0)
            POOL_DRAINING.labels(pool_id).set(1 if pool.draining else 0)
            POOL_ERROR_RATE.labels(pool_id).set(pool.circuit.error_rate)
        self._observe_gpus(now)
        rendering = sum(1 for flight in self.scheduler.in_flight.values() if flight.rendering)
        JOBS_ACTIVE.labels(JobState.ADMITTED.value).set(len(self.scheduler.waiting))
        JOBS_ACTIVE.labels(JobState.RENDERING.value).set(rendering)
        JOBS_ACTIVE.labels(JobState.POSTPROCESSING.value).set(len(self.scheduler.in_flight) - rendering)

    def _observe_gpus(self, now: float) -> None:
        """GPUs busy, the GPU-seconds of the renders running on them, and GPU time held (integrated
        between observations with the count seen at the previous one)."""
        expected: dict[str, float] = {}
        for flight in self.scheduler.in_flight.values():
            pool = self.scheduler.pools.get(flight.pool_id) if flight.rendering else None
            if pool is not None and pool.spec.is_gpu_pool:
                job = flight.job
                expected[pool.pool_id] = expected.get(pool.pool_id, 0.0) + pool.spec.gpu_seconds(
                    job.seconds, job.width, job.height)
        for pool_id, pool in self.scheduler.pools.items():
            busy = pool.in_use if pool.spec.is_gpu_pool else 0
            POOL_GPUS.labels(pool_id).set(pool.spec.gpus)
            POOL_GPUS_IN_USE.labels(pool_id).set(busy)
            POOL_GPU_SECONDS_IN_USE.labels(pool_id).set(expected.get(pool_id, 0.0))
            seen_at, busy_then = self._gpus_busy.get(pool_id, (now, busy))
            POOL_GPU_SECONDS.labels(pool_id).inc(max(0.0, now - seen_at) * busy_then)
            self._gpus_busy[pool_id] = (now, busy)
