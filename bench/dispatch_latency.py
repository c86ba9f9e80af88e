"""Live dispatch latency: from a render slot freeing to the next RenderRequested committed.

Runs the orchestrator's real workflow and engine loop against a real PostgreSQL (started here) with
one pool of 4 slots and a backlog; each round feeds a RenderResult for a rendering job (which frees
its slot and wakes the engine) and times until the engine's dispatch transaction has committed the
next RenderRequested to the outbox. The outbox relay's hop to Kafka is not included (it is the
relay's own LISTEN/NOTIFY-driven publish). Billing is a stand-in that answers at once.

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

from reelforge.jobs.v1 import jobs_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import db, topics
from reelforge_core.kafka import Event
from reelforge_local.infra import PostgresServer
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


async def run(dsn: str, rounds: int) -> list[float]:
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
    rendering: list[str] = []
    for _ in range(4 + rounds):
        job_id = f"job_{uuid.uuid4().hex[:12]}"
        spec = jobs_pb2.JobSpec(prompt="bench", seconds=2, width=854, height=480, model="animatic")
        await workflow.handle(event(topics.JOBS_SUBMITTED, job_id,
                                    jobs_pb2.JobSubmitted(job_id=job_id, tenant_id="bench", spec=spec)))
    for _ in range(4):
        rendering.append((await engine.dispatched.get())[0])
    latencies = []
    for _ in range(rounds):
        done = rendering.pop(0)
        result = render_pb2.RenderResult(render_id=f"{done}/r1", job_id=done, tenant_id="bench", ok=True,
                                         output_uri="cas://sha256/00", output_seconds=2.0)
        await workflow.handle(event(topics.RENDER_RESULT, done, result))
        freed = time.perf_counter()  # the slot is free once the result's transaction committed
        job_id, at = await engine.dispatched.get()
        latencies.append((at - freed) * 1000)
        rendering.append(job_id)
    loop_task.cancel()
    await leadership.release()
    await pool.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    data = ROOT / ".cache" / "bench-postgres"
    shutil.rmtree(data, ignore_errors=True)
    server = PostgresServer.start(data)
    try:
        latencies = asyncio.run(run(server.dsn, args.rounds))
    finally:
        server.stop()
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"rounds                     {len(latencies)}")
    print(f"slot free -> RenderRequested committed (ms): p50 {p(0.5):.1f}  p90 {p(0.9):.1f}  p99 {p(0.99):.1f}  "
          f"max {latencies[-1]:.1f}  mean {statistics.fmean(latencies):.1f}")
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
