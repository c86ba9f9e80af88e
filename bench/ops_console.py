"""How long the ops console's data takes with a busy history behind it.

    ./run bench bench/ops_console.py [--tenants 200] [--active 2000] [--history 100000] [--rounds 50]

Starts PostgreSQL with the orchestrator and billing schemas, seeds `active` waiting or rendering
jobs and `history` finished ones (10% failed, spread over two days) across `tenants`, and as many
settlements and usage rows as finished jobs (half of them today), starts billing's gRPC server,
then times `Console.state()` (queues, pools, recent failures, failure counts, spend today over
gRPC, cached for a few seconds) `rounds` times, 0.5 s apart, and each part alone (spend uncached).
Prints the seeding time, p50 per part and p50/p95/max per call.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

import asyncpg
from billing_common import percentile, postgres

from reelforge.orchestrator.v1 import admin_pb2
from reelforge_billing import ledger
from reelforge_billing.grpc_api import start_server
from reelforge_billing.store import LedgerStore
from reelforge_core import db
from reelforge_orchestrator.__main__ import MIGRATIONS, SCHEMA
from reelforge_orchestrator.admin_api import AdminServicer
from reelforge_orchestrator.billing_client import BillingClient
from reelforge_orchestrator.console import _NO_CONTEXT, Console

_JOBS = """
INSERT INTO jobs (job_id, tenant_id, spec, state, error_code, error_message, admitted_at, pool_id,
                  created_at, updated_at)
SELECT 'job_' || i, 'ten_' || (i % $1), '\\x'::bytea,
       CASE WHEN i <= $2::int THEN (CASE WHEN i % 2 = 0 THEN 'admitted' ELSE 'rendering' END)
            WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END,
       CASE WHEN i > $2 AND i % 10 = 0 THEN (ARRAY['insufficient_credit', 'timeout', 'qc_failed'])[1 + i % 3] END,
       CASE WHEN i > $2 AND i % 10 = 0 THEN 'seeded failure' END,
       now() - ((i::bigint * 7919) % 172800) * interval '1 second',
       CASE WHEN i <= $2 AND i % 2 = 1 THEN 'animatic' END,
       now() - ((i::bigint * 7919) % 172800) * interval '1 second',
       now() - ((i::bigint * 7919) % 172800) * interval '1 second'
FROM generate_series(1, $2::int + $3::int) AS i
"""

_LEDGER = """
WITH tx AS (
    INSERT INTO ledger_transactions (kind, tenant_id, job_id, created_at)
    SELECT 'settle', 'ten_' || (i % $1), 'job_' || i, now() - ((i::bigint * 7919) % 172800) * interval '1 second'
    FROM generate_series(1, $2) AS i RETURNING id, tenant_id
)
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT id, account, amount FROM tx,
       LATERAL (VALUES ($3, 25000), ('tenant:' || tx.tenant_id || ':reserved', -25000)) AS e(account, amount)
"""

_USAGE = """
INSERT INTO usage_records (event_id, tenant_id, job_id, model, width, height, seconds, provider, pool,
                           provider_cost_micros, provider_cost_source, charged_micros, occurred_at)
SELECT 'usage:job_' || i, 'ten_' || (i % $1), 'job_' || i, 'animatic', 1280, 720, 1, 'animatic', 'animatic',
       2000, 'reported', 25000, now() - ((i::bigint * 7919) % 172800) * interval '1 second'
FROM generate_series(1, $2) AS i
"""


async def seed(dsn: str, tenants: int, active: int, history: int) -> None:
    migrated = await db.create_pool(dsn, SCHEMA, 1)
    await db.migrate(migrated, SCHEMA, MIGRATIONS)
    await migrated.close()
    conn = await asyncpg.connect(dsn)  # no statement timeout: the seeding is large
    try:
        await conn.execute(f"SET search_path = {SCHEMA}")
        await conn.execute(_JOBS, tenants, active, history)
        await conn.execute("SET search_path = billing")
        await conn.execute(
            "INSERT INTO accounts (id, tenant_id) SELECT 'tenant:ten_' || t || ':reserved', 'ten_' || t"
            " FROM generate_series(0, $1 - 1) AS t UNION ALL SELECT $2, NULL ON CONFLICT DO NOTHING",
            tenants, ledger.REVENUE)
        await conn.execute(_LEDGER, tenants, history, ledger.REVENUE)
        await conn.execute(_USAGE, tenants, history)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def measure(dsn: str, rounds: int) -> list[float]:
    billing_pool = await db.create_pool(dsn, "billing", 4)
    token = secrets.token_urlsafe(16)
    server, port = await start_server(LedgerStore(billing_pool), "USD", "127.0.0.1", 0, operator_token=token)
    pool = await db.create_pool(dsn, SCHEMA, 4)
    client = BillingClient(f"127.0.0.1:{port}", 10, token)
    admin = AdminServicer(pool, lambda: None)
    console = Console(admin, pool, client, None)
    try:
        state = await console.state()  # warm up; and check it is the seeded world
        assert state["spend"]["available"] and len(state["tenants"]) > 0 and state["failures"]["recent"]
        timings = []
        parts: dict[str, list[float]] = {"queues": [], "pools": [], "failures": [], "spend": []}
        for _ in range(rounds):
            started = time.perf_counter()
            await console.state()
            timings.append(time.perf_counter() - started)
            await asyncio.sleep(0.5)
            for name, part in (("queues", lambda: admin.GetQueues(admin_pb2.GetQueuesRequest(), _NO_CONTEXT)),
                               ("pools", lambda: admin.GetPools(admin_pb2.GetPoolsRequest(), _NO_CONTEXT)),
                               ("failures", console._failures), ("spend", console._fetch_spend)):
                started = time.perf_counter()
                await part()
                parts[name].append(time.perf_counter() - started)
        print("parts, p50: " + ", ".join(f"{name} {percentile(sorted(t), 50) * 1000:.1f} ms"
                                          for name, t in parts.items()))
        return sorted(timings)
    finally:
        await client.close()
        await server.stop(grace=None)
        await pool.close()
        await billing_pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--active", type=int, default=2_000)
    parser.add_argument("--history", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with postgres("ops-console") as dsn:
        started = time.perf_counter()
        asyncio.run(seed(dsn, args.tenants, args.active, args.history))
        seeded = time.perf_counter() - started
        timings = asyncio.run(measure(dsn, args.rounds))
    print(f"seeded {args.active:,} active and {args.history:,} finished jobs, {args.history:,} settlements and "
          f"usage rows across {args.tenants} tenants in {seeded:.1f} s")
    print(f"console state x{args.rounds}: p50 {percentile(timings, 50) * 1000:.1f} ms, "
          f"p95 {percentile(timings, 95) * 1000:.1f} ms, max {timings[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
