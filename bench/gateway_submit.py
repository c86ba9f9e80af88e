"""Gateway throughput with the durable write (job row + outbox event in one transaction), on a real
PostgreSQL, without Kafka (the relay is not what is measured). Prints:

  - accepted jobs/s, closed loop (many connections submitting as fast as they are answered)
  - p50/p99 submit latency at fixed request rates (open loop: latency counts from the scheduled send,
    so a stalled server cannot hide queueing)
  - status reads/s (GET /v1/jobs/{id}, tenant-scoped), closed loop, polling 1,000 jobs that do not change
    meanwhile (after a warm-up pass: each process keeps the jobs it read until they change; set
    REELFORGE_GATEWAY_STATUS_CACHE_ENTRIES=0 to measure every read going to the database)

The gateway runs as the service's own HTTP processes (`http_workers.run_worker`: uvloop, httptools, key cache
live, group commit), --workers of them on one port (default 2, the `http_workers` setting). The load
generator is a minimal keep-alive HTTP/1.1 client on asyncio streams (uvloop) in this process. All share this
machine's cores, so each phase also prints the CPU it cost per request: gateway processes, PostgreSQL backends,
and the load generator.

    ./run bench bench/gateway_submit.py [--seconds 6] [--rates 200,500] [--connections 32] [--workers 2]
                                        [--rate-limit 100000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_postgres  # noqa: E402

from reelforge_core import db  # noqa: E402
from reelforge_gateway import http_workers, store  # noqa: E402
from reelforge_gateway.__main__ import MIGRATIONS, SCHEMA  # noqa: E402
from reelforge_gateway.settings import GatewaySettings  # noqa: E402
from reelforge_local.infra import free_port  # noqa: E402
from tests.conftest import CACHE  # noqa: E402

JOB = json.dumps({"prompt": "A water purifier on a kitchen counter", "seconds": 4, "size": "1280x720",
                  "metadata": {"customer": "bench"}}).encode()


def gateway_settings(dsn: str, content_dir: str, rate_limit: int) -> GatewaySettings:
    # --rate-limit N: per key and per tenant, high enough never to refuse, so the figures show what checking
    # the limit costs (0: off).
    return GatewaySettings(database_url=dsn, content_dir=Path(content_dir), database_pool_size=20,
                           log_level="WARNING", rate_limit_per_minute=rate_limit,
                           tenant_rate_limit_per_minute=rate_limit)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if Path(entry, "stat").read_text().rpartition(")")[2].split()[1] == str(pid):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class CpuMeter:
    """CPU spent by the gateway process(es), PostgreSQL (its backends) and this load generator during a phase."""

    def __init__(self, gateway: list[int], postmaster: int) -> None:
        self.gateway, self.postmaster = gateway, postmaster

    def sample(self) -> tuple[float, float, float]:
        postgres = sum(cpu_seconds(pid) for pid in children(self.postmaster))
        return (sum(cpu_seconds(pid) for pid in self.gateway), postgres, cpu_seconds(os.getpid()))

    def per_request(self, before: tuple[float, float, float], requests: float) -> str:
        after = self.sample()
        gateway, postgres, client = (1000 * (a - b) / max(requests, 1) for a, b in zip(after, before, strict=True))
        return (f"CPU per request: gateway {gateway:.2f} ms, PostgreSQL {postgres:.2f} ms,"
                f" load generator {client:.2f} ms")


class Connection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for this server's answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auth: str) -> None:
        self.reader, self.writer, self.auth = reader, writer, auth

    @classmethod
    async def open(cls, port: int, auth: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, auth)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {self.auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readuntil(b"\r\n")
        length = 0
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        self.writer.close()


async def closed_loop(port: int, auth: str, connections: int, seconds: float,
                      method: str, paths: list[str], body: bytes, expect: int) -> tuple[float, int]:
    conns = [await Connection.open(port, auth) for _ in range(connections)]
    done = 0
    failures = 0
    stop = time.monotonic() + seconds

    async def worker(index: int, conn: Connection) -> None:
        nonlocal done, failures
        i = index
        while time.monotonic() < stop:
            try:
                status, _ = await asyncio.wait_for(conn.request(method, paths[i % len(paths)], body), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                # e.g. a keep-alive connection the server closed while this loaded machine left it idle
                failures += 1
                conn.close()
                conn = conns[index] = await Connection.open(port, auth)
                continue
            i += connections
            if status == expect:
                done += 1
            else:
                failures += 1

    began = time.monotonic()
    await asyncio.gather(*[worker(i, c) for i, c in enumerate(conns)])
    elapsed = time.monotonic() - began
    for conn in conns:
        conn.close()
    if failures:
        print(f"    ({failures} unexpected answers)")
    return done / elapsed, done + failures


async def fixed_rate(port: int, auth: str, rate: int, seconds: float,
                     connections: int) -> tuple[float, float, int, int, int]:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(port, auth))
    latencies: list[float] = []
    failures = 0

    async def one(scheduled: float) -> None:
        nonlocal failures
        conn = await idle.get()
        try:
            status, _ = await conn.request("POST", "/v1/jobs", JOB)
        finally:
            idle.put_nowait(conn)
        latencies.append(time.monotonic() - scheduled)
        if status != 202:
            failures += 1

    start = time.monotonic() + 0.05
    tasks = []
    for n in range(int(rate * seconds)):
        scheduled = start + n / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    # Bounded: whatever has not been answered 3 s after the last send counts as slower than any answer.
    _, pending = await asyncio.wait(tasks, timeout=3.0)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    while not idle.empty():
        idle.get_nowait().close()
    ordered = sorted(latencies) + [float("inf")] * len(pending)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return p50, p99, failures, len(pending), len(tasks)


async def prepare(dsn: str) -> tuple[str, str]:
    pool = await db.create_pool(dsn, SCHEMA, 2)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        tenant_id, key = await store.create_tenant(pool, "bench")
        return tenant_id, key.plaintext
    finally:
        await pool.close()


def listeners(port: int) -> int:
    """How many sockets listen on the port (each gateway process has its own, SO_REUSEPORT)."""
    wanted = f":{port:04X} "
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if wanted in line.split(None, 2)[1] + " " and line.split()[3] == "0A")


async def wait_for_port(port: int, processes: int) -> None:
    for _ in range(2400):  # up to two minutes: a loaded machine imports slowly
        if listeners(port) >= processes:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("gateway did not start")


async def run(args: argparse.Namespace, dsn: str, port: int, postmaster: int) -> None:
    _, key = await prepare(dsn)
    # The service's own HTTP processes (http_workers.run_worker), --workers of them on one port.
    settings = http_workers.with_shared_secret(
        gateway_settings(dsn, str(CACHE / "bench-gateway" / "content"), args.rate_limit))
    processes = http_workers.Workers.start(settings, port, args.workers)
    try:
        await wait_for_port(port, args.workers)
        meter = CpuMeter([p.pid for p in processes.processes if p.pid], postmaster)
        await closed_loop(port, key, 8, 1.0, "POST", ["/v1/jobs"], JOB, 202)  # warm up
        before = meter.sample()
        accepted, sent = await closed_loop(port, key, args.connections, args.seconds, "POST", ["/v1/jobs"], JOB, 202)
        print(f"accepted jobs/s (closed loop, {args.connections} connections, durable write): {accepted:.0f}")
        print(f"    {meter.per_request(before, sent)}; load average {os.getloadavg()[0]:.1f}")
        ids = await report_stored(dsn)
        paths = [f"/v1/jobs/{job_id}" for job_id in ids]
        # Warm-up: every job read a few times, as a partner polling it would (each process keeps what it read).
        await closed_loop(port, key, args.connections, 1.0, "GET", paths, b"", 200)
        before = meter.sample()
        reads, sent = await closed_loop(port, key, args.connections, args.seconds, "GET", paths, b"", 200)
        print(f"status reads/s (closed loop, {args.connections} connections, {len(ids)} jobs polled): {reads:.0f}")
        print(f"    {meter.per_request(before, sent)}; load average {os.getloadavg()[0]:.1f}")
        for rate in args.rates:
            before = meter.sample()
            p50, p99, failures, unanswered, sent = await fixed_rate(port, key, rate, args.seconds,
                                                                    args.connections * 2)
            print(f"submit at {rate} jobs/s for {args.seconds:.0f} s: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                  + (f" ({failures} failed)" if failures else "")
                  + (f" ({unanswered} unanswered 3 s after the last send: saturated)" if unanswered else ""))
            print(f"    {meter.per_request(before, sent)}; load average {os.getloadavg()[0]:.1f}")
    finally:
        await processes.stop()


async def report_stored(dsn: str) -> list[str]:
    """Prints how many jobs and JobSubmitted outbox events the gateway stored; returns up to 1,000 job ids."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": SCHEMA})
    try:
        ids = [r["job_id"] for r in await conn.fetch("SELECT job_id FROM jobs LIMIT 1000")]
        count = await conn.fetchval("SELECT count(*) FROM jobs")
        events = await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = 'jobs.v1.submitted'")
    finally:
        await conn.close()
    print(f"stored: {count} jobs, {events} JobSubmitted outbox events")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", type=lambda text: [int(r) for r in text.split(",")], default=[50, 100, 500])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="gateway HTTP processes (the http_workers setting)")
    parser.add_argument("--rate-limit", type=int, default=0, help="requests per minute per key and tenant (0: off)")
    args = parser.parse_args()
    print(f"machine: {multiprocessing.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start;"
          f" rate limit {args.rate_limit or 'off'}; {args.workers} gateway HTTP process(es)")
    with scratch_postgres("gateway") as postgres, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(args, postgres.dsn, free_port(), postgres._proc.pid))  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
