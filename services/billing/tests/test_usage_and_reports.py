"""Usage recorded exactly once; invoices that sum to the ledger; CSV; margins; budget alerts; reconciliation."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from reelforge_billing import reports
from reelforge_billing.store import LedgerStore
from reelforge_billing.usage import UsageRecorder, UsageRow
from services.billing.tests.billing_db import assert_balanced, ledger, open_store


def usage(event_id: str, job_id: str, tenant_id: str = "t1", *, seconds: str = "8", charged: int = 200_000,
          cost: int = 0, model: str = "animatic", size: tuple[int, int] = (1280, 720)) -> UsageRow:
    return UsageRow(event_id, tenant_id, job_id, model, size[0], size[1], Decimal(seconds), "animatic", "animatic",
                    cost, charged, datetime.now(UTC))


async def ledger_sum(pool: asyncpg.Pool, tenant_id: str, account_id: str) -> int:
    month_start, month_end = reports.month_bounds(reports.current_month())
    return int(await pool.fetchval(
        "SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id"
        " WHERE t.tenant_id = $1 AND e.account_id = $2 AND t.created_at >= $3 AND t.created_at < $4",
        tenant_id, account_id, month_start, month_end,
    ))


async def run_job(store: LedgerStore, tenant_id: str, job_id: str, size: tuple[int, int], seconds: str,
                  actual: str | None = None) -> int:
    await store.reserve(tenant_id, job_id, "animatic", size[0], size[1], Decimal(seconds))
    return await store.settle(tenant_id, job_id, Decimal(actual or seconds))


@pytest.mark.asyncio
async def test_usage_is_recorded_once_per_event_id(postgres_dsn: str) -> None:
    pool, _ = await open_store(postgres_dsn)
    try:
        recorder = UsageRecorder(pool)
        assert await recorder.record([usage("e1", "j1"), usage("e2", "j2"), usage("e1", "j1")]) == 2
        assert await recorder.record([usage("e1", "j1"), usage("e3", "j3", cost=7)]) == 1
        assert await recorder.record([usage("e2", "j2")]) == 0
        rows = await pool.fetch("SELECT event_id, provider_cost_micros, provider_cost_source FROM usage_records"
                                " ORDER BY event_id")
        # the producer reported no cost for e1/e2: priced from the card (animatic pool, 2,000/s x 8 s)
        assert [tuple(r) for r in rows] == [("e1", 16_000, "card"), ("e2", 16_000, "card"), ("e3", 7, "reported")]
        assert await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'billing:usage'") == 3
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_invoice_lines_by_model_and_resolution_sum_to_the_ledger(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.add_free_grant("t1", "seconds", Decimal(5), None)
        await store.grant("t1", 10_000_000)
        await store.grant("t2", 10_000_000)
        await run_job(store, "t1", "a", (1280, 720), "8")
        await run_job(store, "t1", "b", (1280, 720), "8", actual="7.5")
        await run_job(store, "t1", "c", (640, 360), "4")
        await run_job(store, "t1", "d", (1920, 1080), "10")
        await run_job(store, "t2", "other-tenant", (1280, 720), "8")
        await store.reserve("t1", "failed", "animatic", 1280, 720, Decimal(8))
        await store.release("t1", "failed")
        await store.refund("t1", "d", "qc:d", 200_000, "qc failed after delivery")

        invoice = await reports.invoice(pool, "t1", reports.current_month())
        lines = {(line.model, line.resolution): line for line in invoice.lines}
        assert set(lines) == {("animatic", "640x360"), ("animatic", "1280x720"), ("animatic", "1920x1080")}
        hd = lines[("animatic", "1280x720")]
        assert (hd.jobs, hd.seconds, hd.charged, hd.free) == (2, Decimal("15.5"), 387_500, 125_000)
        assert (lines[("animatic", "1920x1080")].refunded, lines[("animatic", "1920x1080")].amount) == (
            200_000, 300_000)
        assert invoice.total == await ledger_sum(pool, "t1", ledger.REVENUE) == 387_500 - 125_000 + 40_000 + 300_000
        assert invoice.free == await ledger_sum(pool, "t1", ledger.FREE_USAGE) == 125_000
        assert sum(line.charged - line.refunded for line in invoice.lines) == invoice.total + invoice.free
        # the tenant's own view agrees: what it spent is the invoice plus the free part
        assert (await store.balance("t1")).spent == invoice.total + invoice.free
        assert (await reports.invoice(pool, "t2", reports.current_month())).total == 200_000
        assert (await reports.invoice(pool, "t1", "2001-01")).lines == []
        with pytest.raises(ValueError):
            reports.month_bounds("2026-13")
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_usage_csv_is_per_tenant_and_hides_provider_cost(postgres_dsn: str) -> None:
    pool, _ = await open_store(postgres_dsn)
    try:
        await UsageRecorder(pool).record([
            usage("e1", "j1", cost=5_000), usage("e2", "=HYPERLINK(1)", charged=1), usage("e3", "j3", "t2"),
        ])
        text, count = await reports.usage_csv(pool, "t1", reports.current_month())
        rows = list(csv.DictReader(io.StringIO(text)))
        assert count == 2 and len(rows) == 2
        assert set(rows[0]) == {"occurred_at", "job_id", "model", "resolution", "seconds", "charged_micros", "charged"}
        by_job = {r["job_id"]: r for r in rows}
        assert by_job["j1"]["charged"] == "0.200000" and by_job["j1"]["resolution"] == "1280x720"
        assert "'=HYPERLINK(1)" in by_job
        assert (await reports.usage_csv(pool, "t1", "2001-01"))[1] == 0
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_margin_is_price_net_of_refunds_minus_provider_cost(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.grant("t1", 10_000_000)
        charged = await run_job(store, "t1", "j1", (1280, 720), "8")
        await store.refund("t1", "j1", "r1", 50_000, "qc")
        await UsageRecorder(pool).record([
            usage("e1", "j1", charged=charged, cost=30_000),
            usage("e2", "j2", "t2", charged=100_000, cost=0, model="animatic"),
        ])
        lines = await reports.margins(pool, reports.current_month())
        assert [(m.tenant_id, m.model, m.jobs, m.price, m.provider_cost, m.margin) for m in lines] == [
            ("t1", "animatic", 1, 150_000, 30_000, 120_000),
            ("t2", "animatic", 1, 100_000, 16_000, 84_000),
        ]
        assert [m.tenant_id for m in await reports.margins(pool, reports.current_month(), "t2")] == ["t2"]
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_budget_alerts_at_80_and_100_percent_once_each(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.set_profile("t1", mode="postpaid", credit_limit=10_000_000, monthly_budget=1_000_000)
        await run_job(store, "t1", "j1", (1280, 720), "30")  # 750,000: 75%
        assert await reports.pending_alerts(pool, "t1", 10) == []
        await run_job(store, "t1", "j2", (640, 360), "5")  # 800,000: 80%
        alerts = await reports.pending_alerts(pool, "t1", 10)
        assert [(a.threshold_pct, a.spent, a.budget) for a in alerts] == [(80, 800_000, 1_000_000)]
        await run_job(store, "t1", "j3", (640, 360), "5")  # 850,000: still only one 80% alert
        await run_job(store, "t1", "j4", (1280, 720), "8")  # 1,050,000: 100%
        alerts = await reports.pending_alerts(pool, None, 10)
        assert [a.threshold_pct for a in alerts] == [80, 100]
        assert alerts[0].month == reports.current_month()
        assert await reports.ack_alerts(pool, [alerts[0].id]) == 1
        assert await reports.ack_alerts(pool, [alerts[0].id]) == 0
        assert [a.threshold_pct for a in await reports.pending_alerts(pool, "t1", 10)] == [100]
        assert await reports.pending_alerts(pool, "someone-else", 10) == []
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_reconciliation_reports_every_kind_of_difference(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.grant("t1", 10_000_000)
        ok = await run_job(store, "t1", "ok", (1280, 720), "8")
        wrong = await run_job(store, "t1", "wrong-charge", (1280, 720), "8")
        await run_job(store, "t1", "no-usage", (1280, 720), "8")
        ok_cost = await run_job(store, "t1", "ok-cost", (1280, 720), "8")
        await UsageRecorder(pool).record([
            usage("u-ok", "ok", charged=ok),  # cost priced from the card: agrees with itself
            usage("u-wrong", "wrong-charge", charged=wrong + 1),
            usage("u-orphan", "never-settled", charged=5),
            usage("u-cost", "ok-cost", charged=ok_cost, cost=99_999),
        ])
        report = await reports.reconcile(pool, reports.current_month(), grace_seconds=0)
        found = sorted((d.kind, d.job_id, d.recorded, d.expected) for d in report.differences)
        assert found == [
            ("charge_mismatch", "wrong-charge", wrong + 1, wrong),
            ("provider_cost_mismatch", "ok-cost", 99_999, 16_000),
            ("settlement_without_usage", "no-usage", 0, 200_000),
            ("usage_without_settlement", "never-settled", 5, 0),
        ]
        assert (report.usage_records, report.settlements) == (4, 4)
        # a fresh settlement may still be waiting for its usage event
        fresh = await reports.reconcile(pool, reports.current_month(), grace_seconds=3600)
        assert "settlement_without_usage" not in {d.kind for d in fresh.differences}
    finally:
        await pool.close()
