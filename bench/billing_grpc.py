"""Reserve+Settle pairs over gRPC against a real billing server process and PostgreSQL.

    ./run bench bench/billing_grpc.py [--seconds 20] [--concurrency 32] [--tenants 64] [--pool 20]
        [--synchronous-commit off] [--group-commit off] [--in-flight 2]

Starts PostgreSQL and `python -m reelforge_billing serve` (usage consumer off: no Kafka needed),
grants every tenant credit, then runs `concurrency` workers, each doing Reserve then Settle for a
new job of a random tenant, for `seconds`. Prints pairs/s and latency percentiles, then checks that
the ledger balances and every pair was charged exactly once. Target: 2,000 pairs/s, p99 < 10 ms.

Every Reserve and every Settle is one durable commit, so the WAL flush time of the machine's disk is
a floor under each latency. `--synchronous-commit off` (set on the throwaway database only, never by
the service) shows what the service itself costs without that floor. The server runs concurrent
calls as one statement and one commit (group commit); `--group-commit off` runs each call alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from billing_common import percentile, postgres

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_billing.__main__ import SCHEMA
from reelforge_billing.store import LedgerStore
from reelforge_core import db
from reelforge_core import grpc as core_grpc
from reelforge_local.infra import free_port
from tests.conftest import CACHE


async def wait_serving(stub: billing_pb2_grpc.BillingServiceStub, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            await stub.GetBalance(billing_pb2.GetBalanceRequest(tenant_id="probe"), timeout=1)
            return
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


TOKEN = "bench-billing-token"  # BillingService answers only the platform's token


def start_server(dsn: str, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "REELFORGE_BILLING_DATABASE_URL": dsn,
        "REELFORGE_BILLING_GRPC_PORT": str(port),
        "REELFORGE_BILLING_HTTP_PORT": "0",
        "REELFORGE_BILLING_CONSUME_USAGE": "false",
        "REELFORGE_BILLING_PUBLISH_EVENTS": "false",
        "REELFORGE_BILLING_RECONCILE_INTERVAL_SECONDS": "0",
        "REELFORGE_BILLING_DATABASE_POOL_SIZE": str(args.pool),
        "REELFORGE_BILLING_LOG_LEVEL": "WARNING",
        "REELFORGE_BILLING_GROUP_COMMIT": str(args.group_commit == "on").lower(),
        "REELFORGE_BILLING_GROUP_COMMIT_IN_FLIGHT": str(args.in_flight),
        "REELFORGE_BILLING_OPERATOR_TOKEN": TOKEN,
    }
    log = (CACHE / "bench-billing-grpc.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "reelforge_billing", "serve"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    return server, port


async def run(dsn: str, server: subprocess.Popen[bytes], port: int, args: argparse.Namespace) -> int:
    channel = core_grpc.channel(f"127.0.0.1:{port}", TOKEN)
    stub = billing_pb2_grpc.BillingServiceStub(channel)
    try:
        await wait_serving(stub, server)
        print(f"billing server pid {server.pid} (attach a profiler to it while the run goes)", flush=True)
        tenants = [f"bench-tenant-{i}" for i in range(args.tenants)]
        flush = await _commit_latency(dsn)
        load_before = os.getloadavg()
        pool = await db.create_pool(dsn, SCHEMA, 2)
        try:
            store = LedgerStore(pool)
            for tenant in tenants:
                await store.grant(tenant, 1_000_000 * 1_000_000)
        finally:
            await pool.close()
        pair_latencies: list[float] = []
        reserve_latencies: list[float] = []
        settle_latencies: list[float] = []
        errors = 0
        counter = 0
        stop_at = 0.0

        async def worker(warmup: bool) -> None:
            nonlocal counter, errors
            while time.monotonic() < stop_at:
                counter += 1
                tenant = random.choice(tenants)
                job = f"{'w' if warmup else 'j'}{counter}"
                started = time.perf_counter()
                try:
                    await stub.Reserve(billing_pb2.ReserveRequest(
                        tenant_id=tenant, job_id=job, model="animatic", width=1280, height=720, seconds=8,
                    ), timeout=10)
                    reserved = time.perf_counter()
                    await stub.Settle(billing_pb2.SettleRequest(tenant_id=tenant, job_id=job, seconds=8), timeout=10)
                except Exception:
                    errors += 1
                    continue
                done = time.perf_counter()
                if not warmup:
                    pair_latencies.append(done - started)
                    reserve_latencies.append(reserved - started)
                    settle_latencies.append(done - reserved)

        stop_at = time.monotonic() + 2
        await asyncio.gather(*(worker(True) for _ in range(args.concurrency)))
        errors = 0
        backends = await _backend_pids(dsn)
        commits_before = await _commits(dsn)
        cpu_before = _cpu_seconds([server.pid]), _cpu_seconds(backends), _own_cpu_seconds()
        stop_at = time.monotonic() + args.seconds
        started = time.monotonic()
        await asyncio.gather(*(worker(False) for _ in range(args.concurrency)))
        elapsed = time.monotonic() - started
        cpu_server = _cpu_seconds([server.pid]) - cpu_before[0]
        cpu_postgres = _cpu_seconds(backends) - cpu_before[1]
        cpu_client = _own_cpu_seconds() - cpu_before[2]
        load_after = os.getloadavg()
        await asyncio.sleep(1.1)  # the statistics collector flushes about once a second
        commits = await _commits(dsn) - commits_before

        pairs = len(pair_latencies)
        print(f"billing gRPC Reserve+Settle: {pairs} pairs in {elapsed:.1f} s over {args.concurrency} workers, "
              f"{args.tenants} tenants, DB pool {args.pool}, synchronous_commit {args.synchronous_commit}, "
              f"group commit {args.group_commit} ({args.in_flight} in flight)")
        print("  one-row INSERT commit (WAL flush) on this machine, 200 in a row: "
              + ", ".join(f"p{p} {flush[p] * 1000:.2f} ms" for p in (50, 90, 99, 100)).replace("p100", "max"))
        print(f"  load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after")
        print(f"  throughput: {pairs / elapsed:,.0f} pairs/s ({2 * pairs / elapsed:,.0f} RPC/s)  errors: {errors}")
        # CPU per pair does not depend on what else the machine runs, unlike the rates and latencies.
        per_pair = 1000 / max(pairs, 1)
        print(f"  CPU per pair: billing server {cpu_server * per_pair:.3f} ms, PostgreSQL backends "
              f"{cpu_postgres * per_pair:.3f} ms, bench client {cpu_client * per_pair:.3f} ms "
              f"(total {(cpu_server + cpu_postgres + cpu_client) * per_pair:.3f} ms: "
              f"{2000 / ((cpu_server + cpu_postgres + cpu_client) * per_pair):,.0f} pairs/s fit in 2 idle cores)")
        print(f"  PostgreSQL commits per pair: {commits / max(pairs, 1):.3f}")
        for name, values in (("pair", pair_latencies), ("reserve", reserve_latencies), ("settle", settle_latencies)):
            values.sort()
            print(f"  {name:8s} latency ms: p50 {percentile(values, 50) * 1000:.2f}  "
                  f"p90 {percentile(values, 90) * 1000:.2f}  p99 {percentile(values, 99) * 1000:.2f}  "
                  f"max {values[-1] * 1000:.2f}")
        target = pairs / elapsed >= 2000 and percentile(pair_latencies, 99) < 0.010
        print(f"  target 2,000 pairs/s with p99 < 10 ms: {'met' if target else 'NOT met'}")

        conn = await asyncpg.connect(dsn, server_settings={"search_path": "billing"})
        try:
            unbalanced = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM ledger_entries GROUP BY transaction_id HAVING sum(amount) <> 0) x"
            )
            total = await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM ledger_entries")
            settles = await conn.fetchval("SELECT count(*) FROM ledger_transactions WHERE kind = 'settle'")
            settled = await conn.fetchval("SELECT count(*) FROM reservations WHERE state = 'settled'")
            revenue = await conn.fetchval(
                "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account_id = 'platform:revenue'"
            )
            charged = await conn.fetchval("SELECT sum(charged_micros) FROM reservations WHERE state = 'settled'")
        finally:
            await conn.close()
        ok = unbalanced == 0 and total == 0 and settles == settled and revenue == charged
        print(f"  ledger: {settles} settlements, unbalanced transactions {unbalanced}, sum of entries {total}, "
              f"revenue {revenue} = charged {charged}: {'consistent' if ok else 'INCONSISTENT'}")
        return 0 if ok else 1
    finally:
        await channel.close(grace=None)


async def _backend_pids(dsn: str) -> list[int]:
    """The PostgreSQL backends serving the billing server's pool (its connections to the bench database)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                " AND pid <> pg_backend_pid()")
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


def _cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of live processes, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


async def _commits(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _commit_latency(dsn: str) -> dict[int, float]:
    """Percentiles of a one-row INSERT commit: the floor the disk's flush puts under a durable write."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE public.commit_probe (n int)")
        latencies = []
        for n in range(200):
            started = time.perf_counter()
            await conn.execute("INSERT INTO public.commit_probe VALUES ($1)", n)
            latencies.append(time.perf_counter() - started)
        await conn.execute("DROP TABLE public.commit_probe")
    finally:
        await conn.close()
    latencies.sort()
    return {p: percentile(latencies, p) for p in (50, 90, 99, 100)}


async def _set_database(dsn: str, name: str, value: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER DATABASE {dsn.rsplit('/', 1)[1]} SET {name} = {value}")
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tenants", type=int, default=64)
    parser.add_argument("--pool", type=int, default=20)
    parser.add_argument("--synchronous-commit", choices=["on", "off"], default="on")
    parser.add_argument("--group-commit", choices=["on", "off"], default="on")
    parser.add_argument("--in-flight", type=int, default=2, help="group commit batches running at once")
    args = parser.parse_args()
    with postgres("billing-grpc") as dsn:
        if args.synchronous_commit == "off":
            asyncio.run(_set_database(dsn, "synchronous_commit", "off"))
        server, port = start_server(dsn, args)
        try:
            return asyncio.run(run(dsn, server, port, args))
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    sys.exit(main())
