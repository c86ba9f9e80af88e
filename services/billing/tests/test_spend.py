"""Spend by day over the real gRPC server and PostgreSQL: charges net of refunds, free grants,
provider cost from metered usage, other days and other tenants left out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
import pytest_asyncio

from reelforge.billing.v1 import spend_pb2, spend_pb2_grpc
from reelforge_billing.grpc_api import start_server
from reelforge_billing.store import LedgerStore
from reelforge_billing.usage import UsageRecorder, UsageRow
from reelforge_core import grpc as core_grpc
from services.billing.tests.billing_db import open_store


@pytest_asyncio.fixture
async def spend_stub(postgres_dsn: str) -> AsyncIterator[tuple[LedgerStore, spend_pb2_grpc.SpendServiceStub]]:
    pool, store = await open_store(postgres_dsn)
    server, port = await start_server(store, "USD", "127.0.0.1", 0, operator_token="billing-test-token")
    channel = core_grpc.channel(f"127.0.0.1:{port}", operator_token="billing-test-token")
    try:
        yield store, spend_pb2_grpc.SpendServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(grace=None)
        await pool.close()


def _usage(event: str, tenant: str, job: str, cost: int, at: datetime) -> UsageRow:
    return UsageRow(event, tenant, job, "animatic", 1280, 720, Decimal(8), "animatic", "animatic", cost, 200_000, at)


@pytest.mark.asyncio
async def test_spend_today_per_tenant(spend_stub: tuple[LedgerStore, spend_pb2_grpc.SpendServiceStub]) -> None:
    store, stub = spend_stub
    await store.grant("paid", 10_000_000)
    await store.add_free_grant("freebie", "seconds", Decimal(8), None)
    for job in ("p1", "p2"):  # 8 s of 720p at 25,000 micros/s = 200,000 each
        await store.reserve("paid", job, "animatic", 1280, 720, Decimal(8))
        await store.settle("paid", job, Decimal(8))
    await store.refund("paid", "p2", "r1", 50_000, "qc")
    await store.reserve("freebie", "f1", "animatic", 1280, 720, Decimal(8))
    await store.settle("freebie", "f1", Decimal(8))
    await store.reserve("paid", "held", "animatic", 1280, 720, Decimal(8))  # held, not spent
    now = datetime.now(UTC)
    await UsageRecorder(store.pool).record([
        _usage("u1", "paid", "p1", 16_000, now), _usage("u2", "paid", "p2", 16_000, now),
        _usage("u3", "freebie", "f1", 16_000, now),
        _usage("u4", "paid", "old", 99_000, now - timedelta(days=2)),
    ])

    today = await stub.GetSpend(spend_pb2.GetSpendRequest())
    assert today.day == now.date().isoformat() and today.currency == "USD"
    assert [(t.tenant_id, t.jobs, t.charged_micros, t.free_micros, t.provider_cost_micros) for t in today.tenants] == [
        ("paid", 2, 350_000, 0, 32_000), ("freebie", 1, 200_000, 200_000, 16_000)]
    assert (today.charged_micros, today.free_micros, today.provider_cost_micros) == (550_000, 200_000, 48_000)

    one = await stub.GetSpend(spend_pb2.GetSpendRequest(tenant_id="freebie"))
    assert [t.tenant_id for t in one.tenants] == ["freebie"]
    earlier = await stub.GetSpend(spend_pb2.GetSpendRequest(day=(now - timedelta(days=2)).date().isoformat()))
    assert [(t.tenant_id, t.jobs, t.charged_micros, t.provider_cost_micros) for t in earlier.tenants] == [
        ("paid", 0, 0, 99_000)]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.GetSpend(spend_pb2.GetSpendRequest(day="yesterday"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "YYYY-MM-DD" in (bad.value.details() or "")
