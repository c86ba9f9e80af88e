"""BillingAdminService, the single-statement Reserve/Settle path, GetUsage/ListInvoices and the budget alert
event, over a real gRPC server and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_billing.grpc_api import start_server
from reelforge_billing.store import LedgerStore
from reelforge_billing.usage import UsageRecorder, UsageRow
from reelforge_core import grpc as core_grpc
from reelforge_core import topics
from services.billing.tests.billing_db import account, assert_balanced, ledger, open_store

HD = {"model": "animatic", "width": 1280, "height": 720}  # default plan: 25,000 micros/s


@dataclass
class Billing:
    pool: asyncpg.Pool
    store: LedgerStore
    stub: billing_pb2_grpc.BillingServiceStub
    admin: billing_pb2_grpc.BillingAdminServiceStub


@pytest_asyncio.fixture
async def billing(postgres_dsn: str) -> AsyncIterator[Billing]:
    pool, store = await open_store(postgres_dsn)
    server, port = await start_server(store, "USD", "127.0.0.1", 0, operator_token="billing-test-token")
    channel = core_grpc.channel(f"127.0.0.1:{port}", operator_token="billing-test-token")
    try:
        yield Billing(pool, store, billing_pb2_grpc.BillingServiceStub(channel),
                      billing_pb2_grpc.BillingAdminServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=None)
        await pool.close()


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code()


async def reserve(billing: Billing, tenant: str, job: str, seconds: float = 8) -> int:
    response = await billing.stub.Reserve(billing_pb2.ReserveRequest(tenant_id=tenant, job_id=job, seconds=seconds,
                                                                     **HD))
    return response.amount_micros


@pytest.mark.asyncio
async def test_tenant_price_override_applies_from_its_effective_date(billing: Billing) -> None:
    admin = billing.admin
    await admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id="t1", amount_micros=10_000_000, reference="p1"))
    later = await admin.SetPrice(billing_pb2.SetPriceRequest(
        model="animatic", max_pixels=921_600, micros_per_second=40_000, tenant_id="t1",
        effective_from=stamp(datetime.now(UTC) + timedelta(days=1))))
    assert await reserve(billing, "t1", "j1") == 8 * 25_000  # the override is not in effect yet
    await admin.SetPrice(billing_pb2.SetPriceRequest(model="animatic", max_pixels=921_600,
                                                     micros_per_second=30_000, tenant_id="t1"))
    assert await reserve(billing, "t1", "j2") == 8 * 30_000
    await admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id="t2", amount_micros=10_000_000, reference="p2"))
    assert await reserve(billing, "t2", "j3") == 8 * 25_000  # the override is t1's only
    rules = (await admin.ListPrices(billing_pb2.ListPricesRequest(tenant_id="t1"))).rules
    assert [(r.micros_per_second, r.tenant_id) for r in rules] == [(40_000, "t1"), (30_000, "t1")]
    assert rules[0].id == later.id and rules[0].effective_from.seconds == later.effective_from.seconds
    defaults = (await admin.ListPrices(billing_pb2.ListPricesRequest(plan_id="default", model="animatic"))).rules
    assert {r.max_pixels for r in defaults} == {230_400, 921_600, 2_073_600, 8_294_400}
    assert not defaults[0].HasField("effective_from")  # seeded rules are in effect since always


@pytest.mark.asyncio
async def test_plans_and_tenant_plan(billing: Billing) -> None:
    admin = billing.admin
    await admin.UpsertPlan(billing_pb2.UpsertPlanRequest(plan_id="pro", name="Pro"))
    await admin.SetPrice(billing_pb2.SetPriceRequest(model="animatic", max_pixels=921_600,
                                                     micros_per_second=20_000, plan_id="pro"))
    profile = await admin.SetTenantPlan(billing_pb2.SetTenantPlanRequest(tenant_id="t1", plan_id="pro"))
    assert (profile.plan_id, profile.mode) == ("pro", "prepaid")
    await admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id="t1", amount_micros=1_000_000, reference="p1"))
    assert await reserve(billing, "t1", "j1") == 8 * 20_000
    assert await code_of(admin.SetTenantPlan(billing_pb2.SetTenantPlanRequest(tenant_id="t1", plan_id="nope"))) \
        == grpc.StatusCode.NOT_FOUND
    assert await code_of(admin.SetPrice(billing_pb2.SetPriceRequest(
        model="animatic", max_pixels=1, micros_per_second=1, plan_id="nope"))) == grpc.StatusCode.NOT_FOUND


@pytest.mark.asyncio
async def test_provider_costs_keep_their_history(billing: Billing) -> None:
    admin = billing.admin
    await admin.SetProviderCost(billing_pb2.SetProviderCostRequest(pool="h100-eu", model="open-sora",
                                                                   max_pixels=2_073_600, micros_per_second=90_000))
    await admin.SetProviderCost(billing_pb2.SetProviderCostRequest(pool="h100-eu", model="open-sora",
                                                                   max_pixels=2_073_600, micros_per_second=70_000))
    costs = (await admin.ListProviderCosts(billing_pb2.ListProviderCostsRequest(pool="h100-eu"))).costs
    assert [c.micros_per_second for c in costs] == [70_000, 90_000]
    assert all(c.effective_from.seconds > 0 for c in costs)


@pytest.mark.asyncio
async def test_free_grant_with_expiry_is_used_first(billing: Billing) -> None:
    admin = billing.admin
    expires = datetime.now(UTC) + timedelta(days=30)
    grant = await admin.IssueFreeGrant(billing_pb2.IssueFreeGrantRequest(tenant_id="t1", seconds=10,
                                                                         expires_at=stamp(expires)))
    assert (grant.unit, grant.amount, grant.remaining) == ("seconds", 10, 10)
    assert grant.expires_at.seconds == int(expires.timestamp())
    assert await reserve(billing, "t1", "j1") == 200_000  # all free: the tenant has no credit at all
    listed = (await admin.ListFreeGrants(billing_pb2.ListFreeGrantsRequest(tenant_id="t1"))).grants
    assert [(g.id, g.remaining) for g in listed] == [(grant.id, 2)]
    assert await code_of(admin.IssueFreeGrant(billing_pb2.IssueFreeGrantRequest(
        tenant_id="t1", seconds=5, expires_at=stamp(datetime.now(UTC) - timedelta(days=1))))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(admin.IssueFreeGrant(billing_pb2.IssueFreeGrantRequest(tenant_id="t1", seconds=5,
                                                                                micros=5))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert (await admin.ListFreeGrants(billing_pb2.ListFreeGrantsRequest(tenant_id="other"))).grants == []


@pytest.mark.asyncio
async def test_add_credit_is_idempotent_by_reference(billing: Billing) -> None:
    admin = billing.admin
    first = await admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id="t1", amount_micros=5_000_000,
                                                               reference="stripe:pi_1"))
    again = await admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id="t1", amount_micros=5_000_000,
                                                               reference="stripe:pi_1"))
    assert (first.applied, again.applied) == (True, False)
    assert first.balance.available_micros == again.balance.available_micros == 5_000_000
    assert await code_of(admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id="t1", amount_micros=-1,
                                                                      reference="x"))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    await assert_balanced(billing.pool)


@pytest.mark.asyncio
async def test_credit_limit_makes_a_tenant_postpaid_up_to_the_limit(billing: Billing) -> None:
    admin = billing.admin
    profile = await admin.SetCreditLimit(billing_pb2.SetCreditLimitRequest(tenant_id="t1",
                                                                           credit_limit_micros=300_000))
    assert (profile.mode, profile.credit_limit_micros) == ("postpaid", 300_000)
    assert await reserve(billing, "t1", "j1") == 200_000
    assert await code_of(reserve(billing, "t1", "j2")) == grpc.StatusCode.FAILED_PRECONDITION
    balance = await billing.stub.GetBalance(billing_pb2.GetBalanceRequest(tenant_id="t1"))
    assert (balance.available_micros, balance.credit_limit_micros) == (-200_000, 300_000)
    profile = await admin.SetCreditLimit(billing_pb2.SetCreditLimitRequest(tenant_id="t1", credit_limit_micros=0))
    assert profile.mode == "prepaid"
    assert await code_of(reserve(billing, "t1", "j3", 1)) == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.asyncio
async def test_fast_and_general_paths_post_the_same_entries(billing: Billing) -> None:
    """A budget sends a tenant through the multi-statement path; the ledger must not tell them apart."""
    admin = billing.admin
    for tenant in ("fast", "general"):
        await admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id=tenant, amount_micros=1_000_000,
                                                           reference=f"p-{tenant}"))
    await admin.SetMonthlyBudget(billing_pb2.SetMonthlyBudgetRequest(tenant_id="general", budget_micros=10**12))
    for tenant in ("fast", "general"):
        assert await reserve(billing, tenant, f"{tenant}-1", 8) == 200_000
        assert await reserve(billing, tenant, f"{tenant}-1", 8) == 200_000  # idempotent
        settled = await billing.stub.Settle(billing_pb2.SettleRequest(tenant_id=tenant, job_id=f"{tenant}-1",
                                                                      seconds=6.5))
        assert settled.charged_micros == 162_500
        again = await billing.stub.Settle(billing_pb2.SettleRequest(tenant_id=tenant, job_id=f"{tenant}-1",
                                                                    seconds=8))
        assert again.charged_micros == 162_500
        assert await account(billing.pool, ledger.available(tenant)) == 1_000_000 - 162_500
        assert await account(billing.pool, ledger.reserved(tenant)) == 0
    entries = await billing.pool.fetch(
        "SELECT t.tenant_id, t.kind, array_agg(e.amount ORDER BY e.amount) AS amounts FROM ledger_transactions t"
        " JOIN ledger_entries e ON e.transaction_id = t.id WHERE t.kind IN ('reserve', 'settle')"
        " GROUP BY t.id, t.tenant_id, t.kind ORDER BY t.kind, t.tenant_id"
    )
    by_kind = {(r["kind"], r["tenant_id"]): list(r["amounts"]) for r in entries}
    assert by_kind[("reserve", "fast")] == by_kind[("reserve", "general")] == [-200_000, 200_000]
    assert by_kind[("settle", "fast")] == by_kind[("settle", "general")] == [-200_000, 37_500, 162_500]
    # Another tenant cannot settle, and a released job cannot be settled.
    assert await code_of(billing.stub.Settle(billing_pb2.SettleRequest(tenant_id="general", job_id="fast-1",
                                                                       seconds=1))) == grpc.StatusCode.NOT_FOUND
    assert await code_of(reserve(billing, "general", "fast-1")) == grpc.StatusCode.NOT_FOUND
    await reserve(billing, "fast", "fast-2")
    await billing.stub.Release(billing_pb2.ReleaseRequest(tenant_id="fast", job_id="fast-2"))
    assert await code_of(billing.stub.Settle(billing_pb2.SettleRequest(tenant_id="fast", job_id="fast-2",
                                                                       seconds=1))) \
        == grpc.StatusCode.FAILED_PRECONDITION
    assert await code_of(billing.stub.Reserve(billing_pb2.ReserveRequest(
        tenant_id="fast", job_id="fast-3", model="unknown", width=1, height=1, seconds=1))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    await assert_balanced(billing.pool)


@pytest.mark.asyncio
async def test_fast_path_concurrent_reserves_never_overdraw(billing: Billing) -> None:
    await billing.store.grant("t1", 1_000_000)  # room for exactly five 200,000 holds

    async def attempt(i: int) -> bool:
        try:
            await reserve(billing, "t1", f"j{i}")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(100)))
    assert sum(results) == 5
    assert await account(billing.pool, ledger.available("t1")) == 0
    await assert_balanced(billing.pool)


@pytest.mark.asyncio
async def test_budget_alert_is_published_once_per_threshold(billing: Billing) -> None:
    admin = billing.admin
    await admin.AddCredit(billing_pb2.AddCreditRequest(tenant_id="t1", amount_micros=10_000_000, reference="p"))
    profile = await admin.SetMonthlyBudget(billing_pb2.SetMonthlyBudgetRequest(tenant_id="t1",
                                                                               budget_micros=1_000_000))
    assert profile.monthly_budget_micros == 1_000_000
    for i, seconds in enumerate([32, 4, 8]):  # 800,000 (80%), 900,000, 1,100,000 (100%)
        await reserve(billing, "t1", f"j{i}", seconds)
        await billing.stub.Settle(billing_pb2.SettleRequest(tenant_id="t1", job_id=f"j{i}", seconds=seconds))
    rows = await billing.pool.fetch("SELECT topic, key, payload, headers FROM outbox ORDER BY id")
    assert [(r["topic"], bytes(r["key"]).decode()) for r in rows] == [(topics.BILLING_BUDGET_ALERT, "t1")] * 2
    alerts = [billing_pb2.BudgetAlertRaised.FromString(bytes(r["payload"])) for r in rows]
    assert [(a.threshold_pct, a.spent_micros, a.budget_micros, a.currency) for a in alerts] == [
        (80, 800_000, 1_000_000, "USD"), (100, 1_100_000, 1_000_000, "USD")]
    assert all(a.tenant_id == "t1" and a.alert_id > 0 and a.at.seconds > 0 for a in alerts)


@pytest.mark.asyncio
async def test_usage_grouped_and_invoices_listed(billing: Billing) -> None:
    now = datetime.now(UTC)
    recorder = UsageRecorder(billing.pool)
    await recorder.record([
        UsageRow("e1", "t1", "j1", "animatic", 1280, 720, Decimal(8), "animatic", "animatic", 0, 200_000, now),
        UsageRow("e2", "t1", "j2", "animatic", 640, 360, Decimal(4), "animatic", "animatic", 0, 40_000, now),
        UsageRow("e3", "t1", "j3", "animatic", 1280, 720, Decimal(2), "animatic", "animatic", 0, 50_000, now),
        UsageRow("e4", "t2", "j4", "animatic", 1280, 720, Decimal(8), "animatic", "animatic", 0, 200_000, now),
    ])
    by_resolution = await billing.stub.GetUsage(billing_pb2.GetUsageRequest(tenant_id="t1",
                                                                            group_by=["resolution"]))
    assert [(r.resolution, r.jobs, r.seconds, r.charged_micros) for r in by_resolution.rows] == [
        ("1280x720", 2, 10.0, 250_000), ("640x360", 1, 4.0, 40_000)]
    total = await billing.stub.GetUsage(billing_pb2.GetUsageRequest(tenant_id="t1"))
    assert [(r.model, r.jobs, r.charged_micros) for r in total.rows] == [("", 3, 290_000)]
    by_day = await billing.stub.GetUsage(billing_pb2.GetUsageRequest(tenant_id="t1", group_by=["model", "day"]))
    assert [(r.model, r.day) for r in by_day.rows] == [("animatic", now.strftime("%Y-%m-%d"))]
    empty = await billing.stub.GetUsage(billing_pb2.GetUsageRequest(
        tenant_id="t1", start=stamp(now - timedelta(days=9)), end=stamp(now - timedelta(days=8))))
    assert list(empty.rows) == []
    assert await code_of(billing.stub.GetUsage(billing_pb2.GetUsageRequest(tenant_id="t1", group_by=["pool"]))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(billing.stub.GetUsage(billing_pb2.GetUsageRequest(
        tenant_id="t1", start=Timestamp(seconds=2**53)))) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(billing.admin.IssueFreeGrant(billing_pb2.IssueFreeGrantRequest(
        tenant_id="t1", seconds=1, expires_at=Timestamp(seconds=1, nanos=-5)))) == grpc.StatusCode.INVALID_ARGUMENT

    await billing.store.grant("t1", 1_000_000)
    await reserve(billing, "t1", "j9")
    await billing.stub.Settle(billing_pb2.SettleRequest(tenant_id="t1", job_id="j9", seconds=8))
    invoices = (await billing.stub.ListInvoices(billing_pb2.ListInvoicesRequest(tenant_id="t1"))).invoices
    assert [(i.month, i.total_micros) for i in invoices] == [(now.strftime("%Y-%m"), 200_000)]
    assert (await billing.stub.ListInvoices(billing_pb2.ListInvoicesRequest(tenant_id="t2"))).invoices == []
