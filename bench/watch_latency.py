"""gRPC Watch, woken by NOTIFY: how soon a stored transition reaches its watchers, and what the notifying
trigger costs the status writes. On a real PostgreSQL, without Kafka. Prints:

  - delivery latency p50/p99/max (from the start of the status write to the watcher's receipt) with
    --watchers streams open on as many jobs, transitions written at --rate per second; and a check that
    every watcher saw every transition once, in order
  - status writes/s (store.apply_status, the status consumer's write; --concurrency at a time) with the
    trigger on, off (ALTER TABLE ... DISABLE TRIGGER), and off with a separate NOTIFY after each commit
    (which does not hold PostgreSQL's NOTIFY commit lock across the WAL flush), alternating, so the ratios
    are within one run

The gateway (its gRPC JobsService), the watchers and the writer share one process and event loop, so the
latency includes their contention. The old poller's latency was up to its 0.25 s interval by design (and
one database read per stream every 0.25 s; now one per transition, plus one per fallback interval).

    ./run bench bench/watch_latency.py [--watchers 200] [--rate 200] [--seconds 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import grpc
import uvloop
from google.protobuf.timestamp_pb2 import Timestamp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_postgres  # noqa: E402

from reelforge.jobs.v1 import jobs_pb2, jobs_service_pb2, jobs_service_pb2_grpc  # noqa: E402
from reelforge_core import db  # noqa: E402
from reelforge_core import grpc as core_grpc  # noqa: E402
from reelforge_core.content import ContentStore  # noqa: E402
from reelforge_gateway import follow, grpc_api, store  # noqa: E402
from reelforge_gateway.__main__ import MIGRATIONS, SCHEMA  # noqa: E402
from reelforge_gateway.api.app import create_app  # noqa: E402
from reelforge_gateway.settings import GatewaySettings  # noqa: E402
from tests.conftest import CACHE  # noqa: E402

RENDERING = jobs_pb2.JobState.Value("JOB_STATE_RENDERING")


def status(job_id: str, sequence: int, progress: int) -> jobs_pb2.JobStatusChanged:
    at = Timestamp()
    at.GetCurrentTime()
    return jobs_pb2.JobStatusChanged(job_id=job_id, state=RENDERING, progress_percent=progress, at=at,
                                     sequence=sequence)


async def watch(stub: jobs_service_pb2_grpc.JobsServiceStub, key: str, job_id: str,
                received: list[tuple[int, float]], started: asyncio.Event) -> None:
    call = stub.Watch(jobs_service_pb2.WatchRequest(job_id=job_id), metadata=[("authorization", f"Bearer {key}")])
    async for message in call:
        if message.HasField("transition"):
            received.append((message.transition.index, time.monotonic()))
        else:
            started.set()


async def latency(args: argparse.Namespace, pool: asyncpg.Pool, key: str, target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = jobs_service_pb2_grpc.JobsServiceStub(channel)
        auth = [("authorization", f"Bearer {key}")]
        job_ids = [(await stub.CreateJob(jobs_service_pb2.CreateJobRequest(prompt="A lamp", seconds=4),
                                         metadata=auth)).job.id for _ in range(args.watchers)]
        received: dict[str, list[tuple[int, float]]] = {job_id: [] for job_id in job_ids}
        started = {job_id: asyncio.Event() for job_id in job_ids}
        watchers = [asyncio.create_task(watch(stub, key, job_id, received[job_id], started[job_id]))
                    for job_id in job_ids]
        await asyncio.gather(*(event.wait() for event in started.values()))
        sent: dict[tuple[str, int], float] = {}
        sequence = {job_id: 0 for job_id in job_ids}
        total = int(args.rate * args.seconds)
        began = time.monotonic()
        for n in range(total):
            await asyncio.sleep(max(0.0, began + n / args.rate - time.monotonic()))
            job_id = job_ids[n % len(job_ids)]
            sequence[job_id] += 1
            sent[(job_id, sequence[job_id])] = time.monotonic()  # timeline index = sequence (entry 0 is queued)
            await store.apply_status(pool, status(job_id, sequence[job_id], min(99, sequence[job_id])))
        await asyncio.sleep(1.0)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    delays = []
    exact = True
    for job_id in job_ids:
        indexes = [index for index, _ in received[job_id]]
        exact = exact and indexes == list(range(1, sequence[job_id] + 1))
        delays += [(at - sent[(job_id, index)]) * 1000 for index, at in received[job_id]]
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(f"Watch delivery, {args.watchers} streams, {args.rate} transitions/s for {args.seconds:.0f} s:"
          f" p50 {statistics.median(delays):.1f} ms, p99 {p99:.1f} ms, max {delays[-1]:.1f} ms;"
          f" {len(delays)} of {total} delivered, every stream exactly once in order: {exact};"
          f" load average {os.getloadavg()[0]:.1f}")


async def write_rate(pool: asyncpg.Pool, job_ids: list[str], sequence: dict[str, int], seconds: float,
                     concurrency: int, notify_after: bool = False) -> float:
    done = 0
    deadline = time.monotonic() + seconds

    async def writer(mine: list[str]) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            for job_id in mine:
                sequence[job_id] += 1
                await store.apply_status(pool, status(job_id, sequence[job_id], 50))
                if notify_after:  # the alternative: a NOTIFY of its own after the commit (no WAL, no flush)
                    await pool.execute("SELECT pg_notify($1, $2)", follow.CHANNEL, job_id)
                done += 1

    began = time.monotonic()
    await asyncio.gather(*(writer(job_ids[n::concurrency]) for n in range(concurrency)))
    return done / (time.monotonic() - began)


async def trigger_cost(args: argparse.Namespace, pool: asyncpg.Pool, key: str, target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = jobs_service_pb2_grpc.JobsServiceStub(channel)
        auth = [("authorization", f"Bearer {key}")]
        job_ids = [(await stub.CreateJob(jobs_service_pb2.CreateJobRequest(prompt="A lamp", seconds=4),
                                         metadata=auth)).job.id for _ in range(args.concurrency * 50)]
    sequence = {job_id: 1000 for job_id in job_ids}  # above the latency phase's
    rates: dict[str, list[float]] = {"trigger": [], "none": [], "after": []}
    for mode in ("trigger", "none", "after") * 2:
        on = "ENABLE" if mode == "trigger" else "DISABLE"
        await pool.execute(f"ALTER TABLE jobs {on} TRIGGER job_transitions_notify")
        rates[mode].append(await write_rate(pool, job_ids, sequence, args.seconds / 3, args.concurrency,
                                            notify_after=mode == "after"))
    await pool.execute("ALTER TABLE jobs ENABLE TRIGGER job_transitions_notify")
    trigger, none, after = (statistics.mean(rates[mode]) for mode in ("trigger", "none", "after"))
    print(f"status writes/s ({args.concurrency} at a time): {trigger:.0f} with the NOTIFY trigger, {none:.0f}"
          f" without a NOTIFY, {after:.0f} with a NOTIFY after the commit instead (ratios to none:"
          f" {trigger / none:.2f}, {after / none:.2f}); load average {os.getloadavg()[0]:.1f}")


async def run(args: argparse.Namespace, dsn: str) -> None:
    pool = await db.create_pool(dsn, SCHEMA, 20)
    await db.migrate(pool, SCHEMA, MIGRATIONS)
    _, new_key = await store.create_tenant(pool, "bench")
    settings = GatewaySettings(database_url=dsn, content_dir=CACHE / "bench-watch" / "content", log_level="WARNING",
                               rate_limit_per_minute=0, tenant_rate_limit_per_minute=0)
    app = create_app(pool, ContentStore(CACHE / "bench-watch" / "content"), settings)
    server, _ = core_grpc.create_server([grpc_api.SERVICE_NAME])
    jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(grpc_api.JobsServicer(app.state), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await latency(args, pool, new_key.plaintext, f"127.0.0.1:{port}")
        await trigger_cost(args, pool, new_key.plaintext, f"127.0.0.1:{port}")
    finally:
        await server.stop(grace=1)
        await app.state.notifications.close()
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--rate", type=int, default=200, help="transitions written per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8, help="status writes at a time (trigger cost)")
    args = parser.parse_args()
    print(f"machine: {multiprocessing.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with scratch_postgres("watch") as postgres, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(args, postgres.dsn))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
