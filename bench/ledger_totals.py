"""What the incremental ledger totals cost: the Reserve+Settle write path with and without the
`xid` column and index they need, and the time of one fold.

    ./run bench bench/ledger_totals.py [--pairs 2000] [--concurrency 16] [--tenants 32] [--rounds 2]

On one throwaway PostgreSQL: runs `pairs` Reserve+Settle pairs through the store (no gRPC) with the
column in place, then drops it (and its index) and runs the same again, alternating `rounds` times so
load changes hit both alike. Then folds a backlog of every transaction written and times it, and a
fold with nothing new. Prints pairs/s for each variant, their ratio and the fold times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from decimal import Decimal

from billing_common import postgres

from reelforge_billing import ledger_totals
from reelforge_billing.__main__ import SCHEMA
from reelforge_billing.store import LedgerStore
from reelforge_core import db

DROP = "DROP INDEX ledger_transactions_xid; ALTER TABLE ledger_transactions DROP COLUMN xid"
ADD = ("ALTER TABLE ledger_transactions ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();"
       " CREATE INDEX ledger_transactions_xid ON ledger_transactions (xid)")


async def pairs(store: LedgerStore, count: int, concurrency: int, tenants: list[str], tag: str) -> float:
    jobs = iter(range(count))

    async def worker() -> None:
        for n in jobs:
            tenant = random.choice(tenants)
            await store.reserve(tenant, f"{tag}-{n}", "animatic", 1280, 720, Decimal(4))
            await store.settle(tenant, f"{tag}-{n}", Decimal(4))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def run(dsn: str, args: argparse.Namespace) -> None:
    pool = await db.create_pool(dsn, SCHEMA, args.concurrency + 2)
    store = LedgerStore(pool)
    tenants = [f"bench-{i}" for i in range(args.tenants)]
    for tenant in tenants:
        await store.grant(tenant, 10**12)
    await pairs(store, 200, args.concurrency, tenants, "warm")
    rates: dict[str, list[float]] = {"with xid": [], "without": []}
    for round_ in range(args.rounds):
        rates["with xid"].append(await pairs(store, args.pairs, args.concurrency, tenants, f"a{round_}"))
        await pool.execute(DROP)
        rates["without"].append(await pairs(store, args.pairs, args.concurrency, tenants, f"b{round_}"))
        await pool.execute(ADD)  # rows written meanwhile get the ALTER's xid: still folded once
    transactions = await pool.fetchval("SELECT count(*) FROM ledger_transactions")
    started = time.perf_counter()
    await ledger_totals.fold(pool)
    backlog = time.perf_counter() - started
    started = time.perf_counter()
    await ledger_totals.fold(pool)
    empty = time.perf_counter() - started
    await pool.close()
    load = os.getloadavg()
    for name, values in rates.items():
        print(f"Reserve+Settle {name:>8}: " + ", ".join(f"{v:,.0f}" for v in values) + " pairs/s")
    ratio = sum(rates["with xid"]) / sum(rates["without"])
    print(f"ratio with/without the xid column: {ratio:.3f}")
    print(f"fold of a backlog of {transactions:,} transactions: {backlog * 1000:,.1f} ms; "
          f"fold with nothing new: {empty * 1000:.2f} ms")
    print(f"load average: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tenants", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with postgres("ledger-totals") as dsn:
        asyncio.run(run(dsn, args))


if __name__ == "__main__":
    main()
