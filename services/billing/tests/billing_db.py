"""Helpers for billing tests against a real PostgreSQL (the root `postgres_dsn` fixture)."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from reelforge_billing import __main__ as billing_main
from reelforge_billing import ledger
from reelforge_billing.store import LedgerStore
from reelforge_core import db

MIGRATIONS = Path(billing_main.__file__).parent / "migrations"


async def open_store(dsn: str, size: int = 20) -> tuple[asyncpg.Pool, LedgerStore]:
    pool = await db.create_pool(dsn, "billing", size)
    await db.migrate(pool, "billing", MIGRATIONS)
    return pool, LedgerStore(pool)


async def assert_balanced(pool: asyncpg.Pool) -> None:
    """Every transaction sums to zero, and the cached balances agree with the entries."""
    assert await pool.fetchval("SELECT coalesce(sum(amount), 0) FROM ledger_entries") == 0
    assert await pool.fetchval("SELECT coalesce(sum(balance), 0) FROM accounts") == 0
    assert not await pool.fetch(
        "SELECT transaction_id FROM ledger_entries GROUP BY transaction_id HAVING sum(amount) <> 0"
    )
    drift = await pool.fetch(
        "SELECT a.id FROM accounts a LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries"
        " GROUP BY account_id) e ON e.account_id = a.id WHERE a.balance <> coalesce(e.total, 0)"
    )
    assert not drift, drift


async def account(pool: asyncpg.Pool, account_id: str) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(balance), 0) FROM accounts WHERE id = $1", account_id))


__all__ = ["MIGRATIONS", "account", "assert_balanced", "ledger", "open_store"]
