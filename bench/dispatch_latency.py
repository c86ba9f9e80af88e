"""Live dispatch latency: from a render slot freeing to the next render request readable on Kafka.

Runs the orchestrator's real workflow, engine loop and outbox relay against a real PostgreSQL and a
real Kafka broker (both started here) with one pool of 4 slots and a backlog. Each round feeds a
RenderResult for a rendering job (which frees its slot and wakes the engine) and times two things:
until the engine's dispatch transaction has committed the next RenderRequested to the outbox, and
until a Kafka consumer of render.v1.requested (the render-adapter's topic) has read that request.
Billing is a stand-in that answers at once.

Run: `./run bench bench/dispatch_latency.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from reelforge.jobs.v1 import jobs_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import db, topics
from reelforge_core.kafka import Event, EventProducer
from reelforge_core.outbox import OutboxRelay
from reelforge_local.infra import KafkaBroker, PostgresServer
from reelforge_orchestrator import config_store
from reelforge_orchestrator.engine import Engine
from reelforge_orchestrator.leader import Leadership
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.pools import PoolSpec
from reelforge_orchestrator.scheduling.router import Job as SchedJob
from reelforge_orchestrator.workflow import Workflow

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "services/orchestrator/reelforge_orchestrator/migrations"


class InstantBilling:
    async def reserve(self, tenant_id: str, job_id: str, spec: jobs_pb2.JobSpec) -> int:
        return 1

    async def settle(self, tenant_id: str, job_id: str, seconds: float) -> int:
        return 1

    async def release(self, tenant_id: str, job_id: str, reason: str) -> int:
        return 1


class TimedEngine(Engine):
    dispatched: asyncio.Queue[tuple[str, float]]

    async def _write_dispatch(self, item: SchedJob, pool_id: str, provider: str, attempt: int) -> None:
        await super()._write_dispatch(item, pool_id, provider, attempt)
        self.dispatched.put_nowait((item.job_id, time.perf_counter()))


def event(topic: str, key: str, message: object) -> Event:
    return Event(topic, 0, 0, key, message.SerializeToString(), {"event-id": str(uuid.uuid4())})  # type: ignore[attr-defined]


async def read_requests(consumer: AIOKafkaConsumer, seen: asyncio.Queue[tuple[str, float]]) -> None:
    async for record in consumer:
        request = render_pb2.RenderRequested()
        request.ParseFromString(record.value)
        seen.put_nowait((request.job_id, time.perf_counter()))


async def run(dsn: str, bootstrap: str, rounds: int) -> tuple[list[float], list[float]]:
    producer = EventProducer(bootstrap, "bench-orchestrator")
    await producer.start()
    consumer = AIOKafkaConsumer(topics.RENDER_REQUESTED, bootstrap_servers=bootstrap, group_id="bench-render",
                                auto_offset_reset="latest", enable_auto_commit=True)
    await consumer.start()
    while not consumer.assignment():  # noqa: ASYNC110 (joined the group: what is published from now on is read)
        await asyncio.sleep(0.05)
    for partition in consumer.assignment():
        await consumer.seek_to_end(partition)
        await consumer.position(partition)
    on_kafka: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    reader = asyncio.create_task(read_requests(consumer, on_kafka))
    pool = await db.create_pool(dsn, "orchestrator", 10)
    await db.migrate(pool, "orchestrator", MIGRATIONS)
    await config_store.upsert_pool(pool, PoolSpec("animatic", "animatic", "animatic", slots=4))
    await config_store.upsert_contract(pool, TenantContract("bench", max_concurrent=1000, requests_per_minute=100_000))
    leadership = Leadership(dsn, "orchestrator")
    billing = InstantBilling()
    engine = TimedEngine(pool, billing, await leadership.acquire())  # type: ignore[arg-type]
    engine.dispatched = asyncio.Queue()
    await engine.rebuild()
    workflow = Workflow(pool, billing, engine)  # type: ignore[arg-type]
    loop_task = asyncio.create_task(engine.run())
    relay_task = asyncio.create_task(OutboxRelay(pool, producer, "orchestrator").run())
    rendering: list[str] = []
    for _ in range(4 + rounds):
        job_id = f"job_{uuid.uuid4().hex[:12]}"
        spec = jobs_pb2.JobSpec(prompt="bench", seconds=2, width=854, height=480, model="animatic")
        await workflow.handle(event(topics.JOBS_SUBMITTED, job_id,
                                    jobs_pb2.JobSubmitted(job_id=job_id, tenant_id="bench", spec=spec)))
    for _ in range(4):
        rendering.append((await engine.dispatched.get())[0])
    for _ in range(4):
        await asyncio.wait_for(on_kafka.get(), 30)
    committed: list[float] = []
    readable: list[float] = []
    for _ in range(rounds):
        done = rendering.pop(0)
        result = render_pb2.RenderResult(render_id=f"{done}/r1", job_id=done, tenant_id="bench", ok=True,
                                         output_uri="cas://sha256/00", output_seconds=2.0)
        await workflow.handle(event(topics.RENDER_RESULT, done, result))
        freed = time.perf_counter()  # the slot is free once the result's transaction committed
        job_id, at = await engine.dispatched.get()
        committed.append((at - freed) * 1000)
        read_id, read_at = await asyncio.wait_for(on_kafka.get(), 30)
        assert read_id == job_id, f"read {read_id} on Kafka, expected {job_id}"
        readable.append((read_at - freed) * 1000)
        rendering.append(job_id)
    for task in (loop_task, relay_task, reader):
        task.cancel()
    await asyncio.gather(loop_task, relay_task, reader, return_exceptions=True)
    await consumer.stop()
    await producer.stop()
    await leadership.release()
    await pool.close()
    return committed, readable


def report(what: str, latencies: list[float]) -> None:
    latencies = sorted(latencies)
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"slot free -> {what} (ms): p50 {p(0.5):.1f}  p90 {p(0.9):.1f}  p99 {p(0.99):.1f}  "
          f"max {latencies[-1]:.1f}  mean {statistics.fmean(latencies):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    data = ROOT / ".cache" / "bench-postgres"
    kafka_data = ROOT / ".cache" / "bench-kafka"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(kafka_data, ignore_errors=True)
    server = PostgresServer.start(data)
    try:
        with KafkaBroker.start(ROOT / ".cache", kafka_data) as broker:
            broker.create_topics(topics.all_topics(), partitions=3)
            committed, readable = asyncio.run(run(server.dsn, broker.bootstrap_servers, args.rounds))
    finally:
        server.stop()
    print(f"rounds                     {len(readable)}")
    report("RenderRequested committed to the outbox", committed)
    report("render request read from Kafka", readable)
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
