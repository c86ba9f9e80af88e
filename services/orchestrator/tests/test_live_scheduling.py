"""The live orchestrator against a real PostgreSQL: admission waits for capacity, slots free on
results, failover, cancellation, deadlines, rebuild after a restart and leader fencing.

Events are fed to the workflow the way the Kafka consumer would; billing is a recording stand-in
(its own service has its own tests); time is a controllable clock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from google.protobuf.message import Message

from reelforge.jobs.v1 import jobs_pb2
from reelforge.postprocess.v1 import postprocess_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import db, topics
from reelforge_core.kafka import Event
from reelforge_orchestrator import config_store
from reelforge_orchestrator.engine import Engine
from reelforge_orchestrator.leader import Leadership, LostLeadership
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.fair_queue import SchedulingPolicy
from reelforge_orchestrator.scheduling.pools import PoolSpec
from reelforge_orchestrator.workflow import Workflow

MIGRATIONS = Path(__file__).parents[1] / "reelforge_orchestrator" / "migrations"
pytestmark = pytest.mark.asyncio


@dataclass
class RecordingBilling:
    reserved: list[str] = field(default_factory=list)
    released: list[tuple[str, str]] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)

    async def reserve(self, tenant_id: str, job_id: str, spec: jobs_pb2.JobSpec) -> int:
        self.reserved.append(job_id)
        return 1000

    async def settle(self, tenant_id: str, job_id: str, seconds: float) -> int:
        self.settled.append(job_id)
        return 900

    async def release(self, tenant_id: str, job_id: str, reason: str) -> int:
        self.released.append((job_id, reason))
        return 1000


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    pool: asyncpg.Pool
    dsn: str
    billing: RecordingBilling
    clock: Clock
    engine: Engine
    workflow: Workflow
    leadership: Leadership

    async def event(self, topic: str, key: str, message: Message) -> None:
        headers = {"event-id": str(uuid.uuid4())}
        await self.workflow.handle(Event(topic, 0, 0, key, message.SerializeToString(), headers))

    async def submit(self, tenant: str, model: str = "animatic", seconds: float = 4.0) -> str:
        job_id = f"job_{uuid.uuid4().hex[:12]}"
        spec = jobs_pb2.JobSpec(prompt="a kettle", seconds=seconds, width=1280, height=720, model=model)
        await self.event(topics.JOBS_SUBMITTED, job_id, jobs_pb2.JobSubmitted(job_id=job_id, tenant_id=tenant,
                                                                               spec=spec))
        return job_id

    async def state(self, job_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
        assert row is not None
        return dict(row)

    async def render_requests(self) -> list[render_pb2.RenderRequested]:
        rows = await self.pool.fetch("SELECT payload FROM outbox WHERE topic = $1 ORDER BY id", topics.RENDER_REQUESTED)
        return [render_pb2.RenderRequested.FromString(r["payload"]) for r in rows]

    async def render_result(self, job_id: str, ok: bool = True, retriable: bool = False, code: str = "") -> None:
        job = await self.state(job_id)
        render_id = f"{job_id}/r{job['render_attempt']}"
        result = render_pb2.RenderResult(render_id=render_id, job_id=job_id, tenant_id=job["tenant_id"], ok=ok,
                                         output_uri="cas://sha256/ab" if ok else "", output_seconds=4.0,
                                         error_code=code, error_message="" if ok else "provider said no",
                                         retriable=retriable)
        await self.event(topics.RENDER_RESULT, job_id, result)

    async def postprocess_result(self, job_id: str) -> None:
        job = await self.state(job_id)
        await self.event(topics.POSTPROCESS_RESULT, job_id, postprocess_pb2.PostprocessResult(
            job_id=job_id, tenant_id=job["tenant_id"], ok=True, output_uri="cas://sha256/cd", output_seconds=4.0))


async def _harness(dsn: str, clock: Clock | None = None, billing: RecordingBilling | None = None) -> Harness:
    pool = await db.create_pool(dsn, "orchestrator", 10)
    await db.migrate(pool, "orchestrator", MIGRATIONS)
    leadership = Leadership(dsn, "orchestrator", poll_seconds=0.05)
    epoch = await leadership.acquire()
    clock = clock or Clock()
    billing = billing or RecordingBilling()
    policy = SchedulingPolicy(backoff_first_seconds=2.0, max_attempts=3)
    engine = Engine(pool, billing, epoch, policy, clock=clock)  # type: ignore[arg-type]
    await engine.rebuild()
    return Harness(pool, dsn, billing, clock, engine, Workflow(pool, billing, engine), leadership)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def h(postgres_dsn: str) -> AsyncIterator[Harness]:
    harness = await _harness(postgres_dsn)
    yield harness
    await harness.leadership.release()
    await harness.pool.close()


async def test_jobs_wait_for_a_free_slot_and_go_when_one_frees(h: Harness) -> None:
    await config_store.upsert_contract(h.pool, TenantContract("acme", max_concurrent=2))
    await h.engine.reload()
    jobs = [await h.submit("acme") for _ in range(4)]
    await h.engine.step()
    states = [(await h.state(j))["state"] for j in jobs]
    assert states == ["rendering", "rendering", "admitted", "admitted"]
    requests = await h.render_requests()
    assert [(r.job_id, r.provider, r.attempt) for r in requests] == [(jobs[0], "animatic", 1), (jobs[1], "animatic", 1)]

    await h.render_result(jobs[0])
    await h.engine.step()
    assert (await h.state(jobs[2]))["state"] == "admitted"  # the tenant's slot is held through postprocessing
    await h.postprocess_result(jobs[0])
    await h.engine.step()
    assert (await h.state(jobs[0]))["state"] == "completed"
    assert (await h.state(jobs[2]))["state"] == "rendering"
    assert (await h.state(jobs[3]))["state"] == "admitted"


async def test_pool_slots_cap_dispatch_across_tenants(h: Harness) -> None:
    await config_store.upsert_pool(h.pool, PoolSpec("animatic", "animatic", "animatic", slots=3))
    await h.engine.reload()
    jobs = [await h.submit(tenant) for tenant in ["a", "b", "c", "a", "b", "c"]]
    await h.engine.step()
    rendering = [j for j in jobs if (await h.state(j))["state"] == "rendering"]
    assert len(rendering) == 3
    assert {(await h.state(j))["tenant_id"] for j in rendering} == {"a", "b", "c"}  # fair: one each


async def test_contract_rejection_fails_fast_without_a_hold(h: Harness) -> None:
    await config_store.upsert_contract(h.pool, TenantContract("acme", allowed_models=frozenset({"animatic"}),
                                                              max_seconds=10))
    await h.engine.reload()
    too_long = await h.submit("acme", seconds=20)
    unknown_model = await h.submit("acme", model="nope")
    assert (await h.state(too_long))["error_code"] == "too_long"
    assert (await h.state(unknown_model))["error_code"] == "model_not_allowed"
    assert h.billing.reserved == []


async def test_retriable_failure_fails_over_to_the_next_pool(h: Harness) -> None:
    cheap = PoolSpec("cheap/m", "cheapco", "m", slots=2, cost_micros_per_second={"720p": 10})
    dear = PoolSpec("dear/m", "dearco", "m", slots=2, cost_micros_per_second={"720p": 90})
    await config_store.upsert_pool(h.pool, cheap, routes_position=0)
    await config_store.upsert_pool(h.pool, dear, routes_position=1)
    await h.engine.reload()
    job = await h.submit("acme", model="m")
    await h.engine.step()
    assert (await h.state(job))["pool_id"] == "cheap/m"

    await h.render_result(job, ok=False, retriable=True, code="provider_unavailable")
    row = await h.state(job)
    assert (row["state"], row["pool_id"], row["avoid_pools"]) == ("rendering", None, ["cheap/m"])
    await h.engine.step()
    assert len(await h.render_requests()) == 1  # backing off
    h.clock.now += 2.5
    await h.engine.step()
    requests = await h.render_requests()
    assert [(r.provider, r.attempt, r.render_id) for r in requests[1:]] == [("dearco", 2, f"{job}/r2")]
    await h.render_result(job)
    assert (await h.state(job))["state"] == "postprocessing"


async def test_non_retriable_failure_fails_fast_and_releases_the_hold(h: Harness) -> None:
    job = await h.submit("acme")
    await h.engine.step()
    await h.render_result(job, ok=False, retriable=True, code="content_policy")
    row = await h.state(job)
    assert (row["state"], row["error_code"]) == ("failed", "content_policy")
    assert h.billing.released == [(job, "content_policy")]
    assert len(await h.render_requests()) == 1


async def test_cancel_waiting_and_rendering_jobs(h: Harness) -> None:
    await config_store.upsert_contract(h.pool, TenantContract("acme", max_concurrent=1))
    await h.engine.reload()
    rendering, waiting, later = [await h.submit("acme") for _ in range(3)]
    await h.engine.step()
    for job_id in (waiting, rendering):
        await h.event(topics.JOBS_CANCEL_REQUESTED, job_id,
                      jobs_pb2.JobCancelRequested(job_id=job_id, tenant_id="acme", reason="changed my mind"))
    for job_id in (waiting, rendering):
        row = await h.state(job_id)
        assert (row["state"], row["error_code"], row["error_message"]) == ("cancelled", "cancelled", "changed my mind")
    assert sorted(h.billing.released) == sorted([(waiting, "cancelled"), (rendering, "cancelled")])
    rows = await h.pool.fetch("SELECT payload FROM outbox WHERE topic = $1", topics.RENDER_CANCEL_REQUESTED)
    cancels = [render_pb2.RenderCancelRequested.FromString(r["payload"]) for r in rows]
    assert [(c.job_id, c.render_id, c.provider) for c in cancels] == [(rendering, f"{rendering}/r1", "animatic")]
    await h.engine.step()
    assert (await h.state(later))["state"] == "rendering"  # the cancelled render's place went to the next job
    # a late render result for the cancelled job changes nothing
    await h.event(topics.RENDER_RESULT, rendering, render_pb2.RenderResult(render_id=f"{rendering}/r1",
                                                                           job_id=rendering, ok=True))
    assert (await h.state(rendering))["state"] == "cancelled"


async def test_cancel_from_another_tenant_is_ignored(h: Harness) -> None:
    job = await h.submit("acme")
    await h.event(topics.JOBS_CANCEL_REQUESTED, job, jobs_pb2.JobCancelRequested(job_id=job, tenant_id="mallory"))
    assert (await h.state(job))["state"] == "admitted"


async def test_deadline_expires_a_waiting_job_with_a_reason(h: Harness) -> None:
    await config_store.upsert_contract(h.pool, TenantContract("acme", max_concurrent=1, default_deadline_seconds=30))
    await h.engine.reload()
    first, second = await h.submit("acme"), await h.submit("acme")
    await h.engine.step()
    h.clock.now += 31
    await h.engine.step()
    row = await h.state(second)
    assert (row["state"], row["error_code"]) == ("expired", "deadline_exceeded")
    assert "deadline" in row["error_message"]
    assert (second, "deadline_exceeded") in h.billing.released
    assert (await h.state(first))["state"] == "rendering"


async def test_a_new_leader_rebuilds_and_never_dispatches_twice(postgres_dsn: str) -> None:
    clock = Clock()
    first = await _harness(postgres_dsn, clock)
    await config_store.upsert_contract(first.pool, TenantContract("acme", max_concurrent=2))
    await first.engine.reload()
    jobs = [await first.submit("acme") for _ in range(3)]
    await first.engine.step()
    # the leader's session dies (as with kill -9); a standby takes over and rebuilds from Postgres
    await first.leadership.release()
    second = await _harness(postgres_dsn, clock, first.billing)
    assert second.engine.epoch == first.engine.epoch + 1
    await second.engine.step()
    assert len(await second.render_requests()) == 2  # the two in flight were not dispatched again
    assert second.engine.scheduler.tenant_in_flight("acme") == 2
    # the deposed leader cannot dispatch: its epoch is fenced
    await first.render_result(jobs[0])
    await first.postprocess_result(jobs[0])
    with pytest.raises(LostLeadership):
        await first.engine.step()
    assert (await second.state(jobs[2]))["state"] == "admitted"
    # the new leader learns of the completion through the redelivered result and dispatches the third
    second.engine.scheduler.job_done(jobs[0], clock.now)
    await second.engine.step()
    requests = await second.render_requests()
    assert [r.job_id for r in requests] == jobs
    await second.leadership.release()
    await first.pool.close()
    await second.pool.close()


async def test_a_changed_default_contract_applies_to_tenants_without_their_own(h: Harness) -> None:
    jobs = [await h.submit("walk-in") for _ in range(3)]
    await h.engine.step()
    assert [(await h.state(j))["state"] for j in jobs] == ["rendering"] * 3
    await config_store.upsert_contract(h.pool, TenantContract("*", max_concurrent=1))
    await h.engine.reload()
    later = await h.submit("walk-in")
    for job_id in jobs:
        await h.render_result(job_id)
        await h.postprocess_result(job_id)
        await h.engine.step()
        if job_id != jobs[-1]:
            assert (await h.state(later))["state"] == "admitted"  # still 2+ in flight against a cap of 1
    assert (await h.state(later))["state"] == "rendering"


async def test_qc_rerender_waits_for_a_slot_and_renders_again(h: Harness) -> None:
    await config_store.upsert_contract(h.pool, TenantContract("acme", tier="free"))
    await h.engine.reload()
    job = await h.submit("acme")
    await h.engine.step()
    await h.render_result(job)
    rows = await h.pool.fetch("SELECT payload FROM outbox WHERE topic = $1", topics.POSTPROCESS_REQUESTED)
    first = postprocess_pb2.PostprocessRequested.FromString(rows[0]["payload"])
    assert (first.render_id, first.free_tier) == (f"{job}/r1", True)
    await h.event(topics.POSTPROCESS_RESULT, job, postprocess_pb2.PostprocessResult(
        job_id=job, tenant_id="acme", ok=False, error_code="qc_failed", rerender=True, render_id=f"{job}/r1"))
    row = await h.state(job)
    assert (row["state"], row["pool_id"]) == ("rendering", None)
    await h.engine.step()
    requests = await h.render_requests()
    assert [(r.render_id, r.attempt) for r in requests] == [(f"{job}/r1", 1), (f"{job}/r2", 2)]


async def test_a_deadline_in_the_spec_is_kept_and_enforced(h: Harness) -> None:
    await config_store.upsert_contract(h.pool, TenantContract("acme", max_concurrent=1))
    await h.engine.reload()
    await h.submit("acme")
    job_id = "job_with_deadline"
    spec = jobs_pb2.JobSpec(prompt="p", seconds=2, width=1280, height=720, model="animatic")
    spec.deadline.FromSeconds(int(h.clock.now) + 20)
    await h.event(topics.JOBS_SUBMITTED, job_id, jobs_pb2.JobSubmitted(job_id=job_id, tenant_id="acme", spec=spec))
    await h.engine.step()
    assert (await h.state(job_id))["deadline"].timestamp() == int(h.clock.now) + 20
    h.clock.now += 21
    await h.engine.step()
    assert (await h.state(job_id))["state"] == "expired"


async def test_a_pool_put_at_a_route_position_moves_the_others_down(h: Harness) -> None:
    first = PoolSpec("first/r", "firstco", "r", slots=1)
    second = PoolSpec("second/r", "secondco", "r", slots=1)
    newcomer = PoolSpec("new/r", "newco", "r", slots=1)
    await config_store.upsert_pool(h.pool, first, routes_position=0)
    await config_store.upsert_pool(h.pool, second, routes_position=1)
    await config_store.upsert_pool(h.pool, newcomer, routes_position=0)
    assert (await config_store.load(h.pool)).routes["r"] == ["new/r", "first/r", "second/r"]
    await config_store.upsert_pool(h.pool, newcomer, routes_position=9)  # moved to the end, not duplicated
    assert (await config_store.load(h.pool)).routes["r"] == ["first/r", "second/r", "new/r"]
