"""The ledger against a real PostgreSQL: idempotency, balance checks, no overdraft under concurrency."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from reelforge_billing import __main__ as billing_main
from reelforge_billing.store import InsufficientCredit, LedgerStore, ReservationClosed
from reelforge_core import db

MIGRATIONS = Path(billing_main.__file__).parent / "migrations"


async def _store(dsn: str) -> tuple[asyncpg.Pool, LedgerStore]:
    pool = await db.create_pool(dsn, "billing", 20)
    await db.migrate(pool, "billing", MIGRATIONS)
    return pool, LedgerStore(pool)


async def _assert_balanced(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT coalesce(sum(amount), 0) FROM ledger_entries") == 0
    assert await pool.fetchval(
        "SELECT coalesce(sum(balance), 0) FROM accounts WHERE id LIKE 'tenant:%'"
    ) == -await pool.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account_id NOT LIKE 'tenant:%'"
    )


@pytest.mark.asyncio
async def test_reserve_settle_release_are_idempotent(postgres_dsn: str) -> None:
    pool, store = await _store(postgres_dsn)
    try:
        await store.grant("t1", 1_000_000)
        held = await store.reserve("t1", "job1", "animatic", 1280, 720, Decimal(8))
        assert held == 200_000
        assert await store.reserve("t1", "job1", "animatic", 1280, 720, Decimal(8)) == held
        assert await store.settle("t1", "job1", Decimal("7.5")) == 187_500
        assert await store.settle("t1", "job1", Decimal("7.5")) == 187_500
        assert await store.release("t1", "job1") == 0
        balance = await store.balance("t1")
        assert (balance.available, balance.reserved, balance.spent) == (812_500, 0, 187_500)
        await _assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_release_returns_the_hold_and_blocks_a_later_settle(postgres_dsn: str) -> None:
    pool, store = await _store(postgres_dsn)
    try:
        await store.grant("t1", 100_000)
        await store.reserve("t1", "job1", "animatic", 640, 360, Decimal(4))
        assert await store.release("t1", "job1") == 40_000
        with pytest.raises(ReservationClosed):
            await store.settle("t1", "job1", Decimal(4))
        assert (await store.balance("t1")).available == 100_000
        await _assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_concurrent_reserves_never_overdraw(postgres_dsn: str) -> None:
    pool, store = await _store(postgres_dsn)
    try:
        await store.grant("t1", 250_000)  # room for 6 jobs of 40,000

        async def attempt(i: int) -> bool:
            try:
                await store.reserve("t1", f"job{i}", "animatic", 640, 360, Decimal(4))
                return True
            except InsufficientCredit:
                return False

        results = await asyncio.gather(*(attempt(i) for i in range(40)))
        assert sum(results) == 6
        balance = await store.balance("t1")
        assert balance.available == 10_000 and balance.reserved == 240_000
        await _assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_entries_are_immutable(postgres_dsn: str) -> None:
    pool, store = await _store(postgres_dsn)
    try:
        await store.grant("t1", 1_000)
        with pytest.raises(asyncpg.RaiseError, match="immutable"):
            await pool.execute("UPDATE ledger_entries SET amount = amount + 1")
        with pytest.raises(asyncpg.RaiseError, match="does not balance"):
            async with pool.acquire() as conn, conn.transaction():
                txn = await conn.fetchval(
                    "INSERT INTO ledger_transactions (kind, tenant_id) VALUES ('grant', 't1') RETURNING id"
                )
                await conn.execute(
                    "INSERT INTO ledger_entries (transaction_id, account_id, amount)"
                    " VALUES ($1, 'platform:revenue', 5)", txn,
                )
    finally:
        await pool.close()
