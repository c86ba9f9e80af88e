"""The billing gRPC API over a real server and PostgreSQL: new RPCs and their error codes."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import grpc
import pytest
import pytest_asyncio

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_billing import reports
from reelforge_billing.grpc_api import start_server
from reelforge_billing.store import LedgerStore
from reelforge_billing.usage import UsageRecorder, UsageRow
from reelforge_core import grpc as core_grpc
from services.billing.tests.billing_db import assert_balanced, open_store


@dataclass
class Billing:
    pool: asyncpg.Pool
    store: LedgerStore
    stub: billing_pb2_grpc.BillingServiceStub
    port: int


TOKEN = "billing-service-test-token"


@pytest_asyncio.fixture
async def billing(postgres_dsn: str) -> AsyncIterator[Billing]:
    pool, store = await open_store(postgres_dsn)
    server, port = await start_server(store, "USD", "127.0.0.1", 0, reconcile_grace_seconds=0,
                                      operator_token=TOKEN)
    channel = core_grpc.channel(f"127.0.0.1:{port}", TOKEN)
    try:
        yield Billing(pool, store, billing_pb2_grpc.BillingServiceStub(channel), port)
    finally:
        await channel.close()
        await server.stop(grace=None)
        await pool.close()


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code()


@pytest.mark.asyncio
async def test_free_grant_then_paid_over_grpc(billing: Billing) -> None:
    stub = billing.stub
    await billing.store.add_free_grant("t1", "seconds", Decimal(8), None)
    quote = await stub.CheckQuota(billing_pb2.CheckQuotaRequest(
        tenant_id="t1", model="animatic", width=1280, height=720, seconds=8))
    assert (quote.allowed, quote.free_micros, quote.paid_micros) == (True, 200_000, 0)
    await stub.Reserve(billing_pb2.ReserveRequest(tenant_id="t1", job_id="j1", model="animatic", width=1280,
                                                  height=720, seconds=8))
    await stub.Settle(billing_pb2.SettleRequest(tenant_id="t1", job_id="j1", seconds=8))
    # free seconds used up: the next job needs paid credit the tenant does not have yet
    quote = await stub.CheckQuota(billing_pb2.CheckQuotaRequest(
        tenant_id="t1", model="animatic", width=1280, height=720, seconds=8))
    assert not quote.allowed and quote.paid_micros == 200_000 and quote.balance.free_seconds == 0
    reserve = stub.Reserve(billing_pb2.ReserveRequest(tenant_id="t1", job_id="j2", model="animatic", width=1280,
                                                      height=720, seconds=8))
    assert await code_of(reserve) == grpc.StatusCode.FAILED_PRECONDITION
    await billing.store.grant("t1", 1_000_000)  # the tenant pays
    await stub.Reserve(billing_pb2.ReserveRequest(tenant_id="t1", job_id="j2", model="animatic", width=1280,
                                                  height=720, seconds=8))
    settled = await stub.Settle(billing_pb2.SettleRequest(tenant_id="t1", job_id="j2", seconds=8))
    assert settled.charged_micros == 200_000
    balance = await stub.GetBalance(billing_pb2.GetBalanceRequest(tenant_id="t1"))
    assert (balance.available_micros, balance.spent_micros, balance.mode) == (800_000, 400_000, "prepaid")
    invoice = await stub.GetInvoice(billing_pb2.GetInvoiceRequest(tenant_id="t1"))
    assert (invoice.total_micros, invoice.free_micros) == (200_000, 200_000)
    assert [(line.resolution, line.jobs, line.amount_micros) for line in invoice.lines] == [("1280x720", 2, 200_000)]
    await assert_balanced(billing.pool)


@pytest.mark.asyncio
async def test_refund_reports_and_alerts_over_grpc(billing: Billing) -> None:
    stub = billing.stub
    await billing.store.set_profile("t1", mode="postpaid", credit_limit=5_000_000, monthly_budget=250_000)
    await stub.Reserve(billing_pb2.ReserveRequest(tenant_id="t1", job_id="j1", model="animatic", width=1280,
                                                  height=720, seconds=8))
    await stub.Settle(billing_pb2.SettleRequest(tenant_id="t1", job_id="j1", seconds=8))
    refund = billing_pb2.RefundRequest(tenant_id="t1", job_id="j1", refund_id="qc:j1", amount_micros=50_000,
                                       reason="qc_failed")
    assert (await stub.Refund(refund)).refunded_micros == 50_000
    assert (await stub.Refund(refund)).refunded_micros == 50_000
    too_much = billing_pb2.RefundRequest(tenant_id="t1", job_id="j1", refund_id="x", amount_micros=150_001)
    assert await code_of(stub.Refund(too_much)) == grpc.StatusCode.FAILED_PRECONDITION
    other_tenant = billing_pb2.RefundRequest(tenant_id="t2", job_id="j1", refund_id="y", amount_micros=1)
    assert await code_of(stub.Refund(other_tenant)) == grpc.StatusCode.NOT_FOUND
    alerts = (await stub.ListBudgetAlerts(billing_pb2.ListBudgetAlertsRequest(tenant_id="t1"))).alerts
    assert [a.threshold_pct for a in alerts] == [80]
    assert (await stub.AckBudgetAlerts(billing_pb2.AckBudgetAlertsRequest(ids=[alerts[0].id]))).acknowledged == 1

    await UsageRecorder(billing.pool).record([UsageRow(
        "u1", "t1", "j1", "animatic", 1280, 720, Decimal(8), "animatic", "animatic", 0, 200_000,
        (await billing.pool.fetchval("SELECT now()")),
    )])
    exported = await stub.ExportUsage(billing_pb2.ExportUsageRequest(tenant_id="t1"))
    assert exported.rows == 1 and next(csv.DictReader(io.StringIO(exported.csv)))["job_id"] == "j1"
    margin = await stub.GetMarginReport(billing_pb2.MarginReportRequest())
    assert [(m.tenant_id, m.price_micros, m.provider_cost_micros, m.margin_micros) for m in margin.lines] == [
        ("t1", 150_000, 16_000, 134_000)]
    report = await stub.Reconcile(billing_pb2.ReconcileRequest(month=reports.current_month()))
    assert (report.usage_records, report.settlements, list(report.differences)) == (1, 1, [])


@pytest.mark.asyncio
async def test_bad_requests_get_invalid_argument(billing: Billing) -> None:
    stub = billing.stub
    calls = [
        stub.CheckQuota(billing_pb2.CheckQuotaRequest(tenant_id="", model="animatic", width=1, height=1, seconds=1)),
        stub.CheckQuota(billing_pb2.CheckQuotaRequest(tenant_id="t", model="nope", width=1, height=1, seconds=1)),
        stub.CheckQuota(billing_pb2.CheckQuotaRequest(tenant_id="t", model="animatic", width=1, height=1,
                                                      seconds=-1)),
        stub.GetInvoice(billing_pb2.GetInvoiceRequest(tenant_id="t", month="2026-1")),
        stub.ExportUsage(billing_pb2.ExportUsageRequest(tenant_id="t", month="bad")),
        stub.Reconcile(billing_pb2.ReconcileRequest(month="2026-00")),
        stub.Refund(billing_pb2.RefundRequest(tenant_id="t", job_id="j", refund_id="", amount_micros=1)),
    ]
    for call in calls:
        assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_billing_service_answers_only_the_platform_token(billing: Billing) -> None:
    """Reserve and settle move money for any tenant: without the token nothing is reserved, with a wrong
    one neither, and the refusal says why."""
    request = billing_pb2.ReserveRequest(tenant_id="t-auth", job_id="j-auth", model="animatic", width=640,
                                         height=360, seconds=4)
    for token, reason in [(None, "missing operator token"), ("wrong-token", "invalid operator token")]:
        channel = core_grpc.channel(f"127.0.0.1:{billing.port}", token)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await billing_pb2_grpc.BillingServiceStub(channel).Reserve(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED and reason in (refused.value.details() or "")
        finally:
            await channel.close()
    assert not await billing.pool.fetchval("SELECT count(*) FROM ledger_transactions WHERE job_id = 'j-auth'")
