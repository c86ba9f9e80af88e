"""A burst from 10 tenants through the orchestrator on a real Kafka and PostgreSQL. Opt-in: set
REELFORGE_BURST_JOBS_PER_TENANT (50 gives the issue's 500 jobs: 102 s on the shared 2-core machine at a
load average of about 9, Kafka start included; under a load of 20 the orchestrator completed only about
5 jobs a second and 100 jobs did not finish in three minutes), so it stays out of the default run.

The orchestrator runs as in production (Kafka consumer, engine loop, outbox relay); the render and
postprocess services are replaced by a fast fake that reads their request topics and answers after a
few milliseconds, so 500 jobs fit in CI (500 real animatic renders would take many minutes on the
shared machine). The fake counts, per tenant, the jobs it holds from the render request to the
postprocess result it sends, and the renders it holds per pool: a cap the orchestrator broke would
show there. Every job must complete, and every job must be rendered exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelforge.jobs.v1 import jobs_pb2
from reelforge.postprocess.v1 import postprocess_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import db, topics
from reelforge_core.kafka import Event, EventConsumer, EventProducer, OutgoingRecord
from reelforge_core.outbox import OutboxRelay
from reelforge_local.infra import KafkaBroker
from reelforge_orchestrator import config_store
from reelforge_orchestrator.engine import Engine
from reelforge_orchestrator.leader import Leadership
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.pools import PoolSpec
from reelforge_orchestrator.workflow import TOPICS, Workflow

from .test_live_scheduling import MIGRATIONS, RecordingBilling

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("REELFORGE_CACHE", ROOT / ".cache"))
CAPS = {f"burst{i}": 1 + i % 5 for i in range(10)}  # 1..5 each: 30 in all
SLOTS = 24  # fewer than the caps add up to, so the pool binds too
JOBS_PER_TENANT = int(os.environ.get("REELFORGE_BURST_JOBS_PER_TENANT", "0"))
pytestmark = pytest.mark.skipif(not JOBS_PER_TENANT, reason="opt-in: set REELFORGE_BURST_JOBS_PER_TENANT")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker.start(CACHE, tmp_path_factory.mktemp("kafka")) as broker:
        broker.create_topics(topics.all_topics(), partitions=3)
        yield broker


def _record(topic: str, key: str, message: object, tenant_id: str) -> OutgoingRecord:
    return OutgoingRecord(topic, key.encode(), message.SerializeToString(),  # type: ignore[attr-defined]
                          {"event-id": str(uuid.uuid4()), "tenant-id": tenant_id})


class FakeRenderPath:
    """Stands in for the render-adapter and postprocess: answers each request after a short delay."""

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer
        self._rng = random.Random(6)
        self._tasks: set[asyncio.Task[None]] = set()
        self.held: Counter[str] = Counter()  # tenant -> jobs between render request and postprocess result
        self.peak: Counter[str] = Counter()
        self.rendering = 0
        self.peak_rendering = 0
        self.renders: Counter[str] = Counter()  # job -> render requests seen

    async def handle(self, event: Event) -> None:
        if event.topic == topics.RENDER_REQUESTED:
            request = event.parse(render_pb2.RenderRequested)
            self.renders[request.job_id] += 1
            self.held[request.tenant_id] += 1
            self.peak[request.tenant_id] = max(self.peak[request.tenant_id], self.held[request.tenant_id])
            self.rendering += 1
            self.peak_rendering = max(self.peak_rendering, self.rendering)
            self._later(self._render_done(request))
        elif event.topic == topics.POSTPROCESS_REQUESTED:
            self._later(self._postprocess_done(event.parse(postprocess_pb2.PostprocessRequested)))

    def _later(self, work: object) -> None:
        task = asyncio.create_task(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _render_done(self, request: render_pb2.RenderRequested) -> None:
        await asyncio.sleep(self._rng.uniform(0.005, 0.03))
        self.rendering -= 1  # before the result is sent: the orchestrator may reuse the slot after it
        result = render_pb2.RenderResult(render_id=request.render_id, job_id=request.job_id,
                                         tenant_id=request.tenant_id, ok=True, output_uri="cas://sha256/ab",
                                         output_seconds=request.spec.seconds)
        await self._producer.send_all([_record(topics.RENDER_RESULT, request.job_id, result, request.tenant_id)])

    async def _postprocess_done(self, request: postprocess_pb2.PostprocessRequested) -> None:
        await asyncio.sleep(self._rng.uniform(0.005, 0.03))
        self.held[request.tenant_id] -= 1
        result = postprocess_pb2.PostprocessResult(job_id=request.job_id, tenant_id=request.tenant_id, ok=True,
                                                   output_uri="cas://sha256/cd", output_seconds=2.0,
                                                   render_id=request.render_id)
        await self._producer.send_all([_record(topics.POSTPROCESS_RESULT, request.job_id, result, request.tenant_id)])


@pytest.mark.timeout(120 + 6 * JOBS_PER_TENANT * len(CAPS))
def test_caps_hold_and_every_job_completes_once_in_a_burst(kafka: KafkaBroker, postgres_dsn: str) -> None:
    asyncio.run(_burst(kafka.bootstrap_servers, postgres_dsn))


async def _burst(bootstrap: str, dsn: str) -> None:
    pool = await db.create_pool(dsn, "orchestrator", 10)
    await db.migrate(pool, "orchestrator", MIGRATIONS)
    await config_store.upsert_pool(pool, PoolSpec("animatic", "animatic", "animatic", slots=SLOTS,
                                                  requests_per_minute=100_000))
    for tenant_id, cap in CAPS.items():
        await config_store.upsert_contract(pool, TenantContract(tenant_id, max_concurrent=cap,
                                                                requests_per_minute=10_000))
    producer = EventProducer(bootstrap, "burst-test")
    await producer.start()
    leadership = Leadership(dsn, "orchestrator", poll_seconds=0.05)
    billing = RecordingBilling()
    engine = Engine(pool, billing, await leadership.acquire())  # type: ignore[arg-type]
    await engine.rebuild()
    workflow = Workflow(pool, billing, engine)  # type: ignore[arg-type]
    fake = FakeRenderPath(producer)
    orchestrator = EventConsumer(bootstrap, "orchestrator", TOPICS, workflow.handle, producer)
    render_path = EventConsumer(bootstrap, "fake-render-path", [topics.RENDER_REQUESTED, topics.POSTPROCESS_REQUESTED],
                                fake.handle, producer)
    tasks = [asyncio.create_task(work) for work in (orchestrator.run(), render_path.run(), engine.run(),
                                                    OutboxRelay(pool, producer, "orchestrator").run())]
    try:
        burst = []
        for i in range(JOBS_PER_TENANT):
            for tenant_id in CAPS:
                job_id = f"job_{uuid.uuid4().hex[:12]}"
                spec = jobs_pb2.JobSpec(prompt=f"burst {i}", seconds=2, width=640, height=360, model="animatic")
                burst.append(_record(topics.JOBS_SUBMITTED, job_id,
                                     jobs_pb2.JobSubmitted(job_id=job_id, tenant_id=tenant_id, spec=spec), tenant_id))
        await producer.send_all(burst)
        total = len(burst)
        completed = 0
        for _ in range(600 + 60 * JOBS_PER_TENANT):  # a minute to get going, then up to 6 s per job of each tenant
            completed = await pool.fetchval("SELECT count(*) FROM jobs WHERE state = 'completed'")
            if completed == total:
                break
            await asyncio.sleep(0.1)
        assert completed == total, f"{completed} of {total} jobs completed"
        rendered = await pool.fetch("SELECT job_id, count(*) AS n FROM job_transitions WHERE state = 'rendering'"
                                    " GROUP BY job_id")
        assert len(rendered) == total and {r["n"] for r in rendered} == {1}
        assert len(fake.renders) == total and set(fake.renders.values()) == {1}
        for tenant_id, cap in CAPS.items():
            assert fake.peak[tenant_id] <= cap, f"{tenant_id} held {fake.peak[tenant_id]} jobs, cap {cap}"
        assert fake.peak_rendering <= SLOTS
        # The caps were reached, not merely never tested: backlogged tenants with small caps hit them.
        assert sum(1 for tenant_id, cap in CAPS.items() if fake.peak[tenant_id] == cap) >= 4, fake.peak
        assert len(billing.settled) == total
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await leadership.release()
        await pool.close()
