"""Ledger totals are folded in incrementally and exactly: each finished transaction once, an open one
only after it commits; the Prometheus series show them per account kind and currency."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from reelforge_billing import ledger_totals

from .billing_db import open_store

pytestmark = pytest.mark.asyncio


def _by_kind(totals: list[ledger_totals.Total]) -> dict[str, tuple[int, int, int]]:
    return {t.account_kind: (t.in_micros, t.out_micros, t.entries) for t in totals if t.currency == "USD"}


async def test_totals_follow_the_ledger_and_count_each_transaction_once(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        assert await ledger_totals.fold(pool) == []
        await store.grant("acme", 1_000_000)
        await store.reserve("acme", "job-1", "animatic", 1280, 720, Decimal(8))  # holds 200,000
        await store.settle("acme", "job-1", Decimal("7.5"))  # charges 187,500
        totals = _by_kind(await ledger_totals.fold(pool))
        assert totals == {
            "grants": (0, 1_000_000, 1),
            "tenant_available": (1_000_000 + 12_500, 200_000, 3),
            "tenant_reserved": (200_000, 200_000, 2),
            "revenue": (187_500, 0, 1),
        }
        assert _by_kind(await ledger_totals.fold(pool)) == totals  # folding again adds nothing

        # A transaction still open when a fold runs is counted by the first fold after it commits.
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            txn = await conn.fetchval(
                "INSERT INTO ledger_transactions (kind, tenant_id, ref) VALUES ('grant', 'acme', 'late') RETURNING id")
            await conn.execute(
                "INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES"
                " ($1, 'platform:grants', -5000), ($1, 'tenant:acme:available', 5000)", txn)
            await conn.execute("UPDATE accounts SET balance = balance + 5000 WHERE id = 'tenant:acme:available'")
            await store.grant("bolt", 7000)  # a later transaction (another tenant) that commits first
            assert _by_kind(await ledger_totals.fold(pool))["grants"] == (0, 1_000_000, 1)  # held back
            await transaction.commit()
        after = _by_kind(await ledger_totals.fold(pool))
        assert after["grants"] == (0, 1_012_000, 3)
        assert after["tenant_available"][0] == 1_012_500 + 12_000
        assert _by_kind(await ledger_totals.fold(pool)) == after

        # the folded totals equal a full sum of the ledger
        full = await pool.fetch(
            "SELECT ledger_account_kind(account_id) AS kind, sum(amount) FILTER (WHERE amount > 0) AS pos,"
            " -sum(amount) FILTER (WHERE amount < 0) AS neg, count(*) AS n FROM ledger_entries GROUP BY 1")
        assert {r["kind"]: (int(r["pos"] or 0), int(r["neg"] or 0), r["n"]) for r in full} == after

        ledger_totals.COLLECTOR.totals = await ledger_totals.fold(pool)
        assert REGISTRY.get_sample_value("reelforge_ledger_posted_micros_total", {
            "account_kind": "revenue", "currency": "USD", "direction": "in"}) == 187_500
        assert REGISTRY.get_sample_value("reelforge_ledger_balance_micros", {
            "account_kind": "tenant_reserved", "currency": "USD"}) == 0
        assert REGISTRY.get_sample_value("reelforge_ledger_entries_total", {
            "account_kind": "grants", "currency": "USD"}) == 3
    finally:
        await pool.close()
