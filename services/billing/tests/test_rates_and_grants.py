"""Plans, per-tenant overrides, effective dates; free grants then paid; postpaid; quota; refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from reelforge_billing.pricing import NoRate
from reelforge_billing.store import InsufficientCredit, RefundRefused
from services.billing.tests.billing_db import account, assert_balanced, ledger, open_store

HD = (1280, 720)


@pytest.mark.asyncio
async def test_default_plan_keeps_the_animatic_prices(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        assert (await store.rate_for(pool, "t1", "animatic", 640, 360)).micros_per_second == 10_000
        assert (await store.rate_for(pool, "t1", "animatic", *HD)).micros_per_second == 25_000
        assert (await store.rate_for(pool, "t1", "animatic", 1920, 1080)).micros_per_second == 50_000
        with pytest.raises(NoRate):
            await store.rate_for(pool, "t1", "no-such-model", *HD)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_plans_overrides_and_effective_dates(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        now = datetime.now(UTC)
        await store.add_plan("pro", "Pro")
        await store.set_price("animatic", 921_600, 20_000, plan_id="pro", effective_from=now - timedelta(days=1))
        await store.set_price("animatic", 921_600, 15_000, plan_id="pro", effective_from=now + timedelta(days=30))
        await store.set_price("animatic", 921_600, 12_000, tenant_id="vip", effective_from=now - timedelta(hours=1))
        await store.set_profile("pro-tenant", plan_id="pro")
        await store.set_profile("vip", plan_id="pro")
        # the plan's price in effect now, not the future one
        assert (await store.rate_for(pool, "pro-tenant", "animatic", *HD)).micros_per_second == 20_000
        # ... and the future one once it takes effect
        later = now + timedelta(days=31)
        assert (await store.rate_for(pool, "pro-tenant", "animatic", *HD, at=later)).micros_per_second == 15_000
        # the tenant's override beats its plan
        assert (await store.rate_for(pool, "vip", "animatic", *HD)).micros_per_second == 12_000
        # a tier the plan does not price falls through to no rate (plans are complete price lists)
        with pytest.raises(NoRate):
            await store.rate_for(pool, "pro-tenant", "animatic", 1920, 1080)
        # the price is fixed at reservation: a later price change does not alter the hold or the charge
        await store.grant("vip", 1_000_000)
        assert await store.reserve("vip", "j1", "animatic", *HD, Decimal(10)) == 120_000
        await store.set_price("animatic", 921_600, 99_000, tenant_id="vip")
        assert await store.settle("vip", "j1", Decimal(10)) == 120_000
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_free_seconds_first_then_paid_credit(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.add_free_grant("t1", "seconds", Decimal(20), None)
        await store.grant("t1", 1_000_000)
        # two 8 s jobs fit in the free 20 s; nothing touches the paid credit
        for job in ("j1", "j2"):
            assert await store.reserve("t1", job, "animatic", *HD, Decimal(8)) == 200_000
            assert await store.settle("t1", job, Decimal(8)) == 200_000
        balance = await store.balance("t1")
        assert (balance.available, balance.free_seconds) == (1_000_000, Decimal(4))
        # the third straddles: 4 free seconds, 4 paid
        await store.reserve("t1", "j3", "animatic", *HD, Decimal(8))
        assert (await store.balance("t1")).available == 900_000
        await store.settle("t1", "j3", Decimal(8))
        # then fully paid
        await store.reserve("t1", "j4", "animatic", *HD, Decimal(8))
        await store.settle("t1", "j4", Decimal(8))
        balance = await store.balance("t1")
        assert (balance.available, balance.free_seconds, balance.spent) == (700_000, Decimal(0), 800_000)
        assert await account(pool, ledger.REVENUE) == 300_000
        assert await account(pool, ledger.FREE_USAGE) == 500_000
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_unused_free_hold_goes_back_to_the_grant_and_expired_grants_do_not_fund(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.add_free_grant("t1", "micros", Decimal(300_000), None)
        await store.add_free_grant("t1", "seconds", Decimal(100), datetime.now(UTC) - timedelta(seconds=1))
        await store.reserve("t1", "j1", "animatic", *HD, Decimal(8))  # 200,000 from the money grant
        assert (await store.balance("t1")).free_micros == 100_000
        assert await store.settle("t1", "j1", Decimal(6)) == 150_000  # shorter video: 50,000 back to the grant
        assert (await store.balance("t1")).free_micros == 150_000
        await store.reserve("t1", "j2", "animatic", *HD, Decimal(4))
        assert await store.release("t1", "j2") == 100_000  # failed render: no charge, grant refilled
        balance = await store.balance("t1")
        assert (balance.free_micros, balance.free_seconds, balance.spent) == (150_000, Decimal(0), 150_000)
        # expired seconds are not usable; 150,000 free + 0 credit cannot cover 200,000
        with pytest.raises(InsufficientCredit):
            await store.reserve("t1", "j3", "animatic", *HD, Decimal(8))
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_postpaid_tenants_owe_up_to_their_credit_limit(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        with pytest.raises(ValueError):
            await store.set_profile("t1", mode="prepaid", credit_limit=1)
        await store.set_profile("t1", mode="postpaid", credit_limit=500_000)
        for i in range(2):
            await store.reserve("t1", f"j{i}", "animatic", *HD, Decimal(10))  # 250,000 each
        with pytest.raises(InsufficientCredit):
            await store.reserve("t1", "j2", "animatic", *HD, Decimal(1))
        quote = await store.check_quota("t1", "animatic", *HD, Decimal(1))
        assert not quote.allowed and quote.paid == 25_000
        await store.settle("t1", "j0", Decimal(10))
        await store.release("t1", "j1")
        balance = await store.balance("t1")
        assert (balance.available, balance.credit_limit, balance.mode) == (-250_000, 500_000, "postpaid")
        assert (await store.check_quota("t1", "animatic", *HD, Decimal(10))).allowed
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_check_quota_holds_nothing_and_shows_who_pays(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.add_free_grant("t1", "seconds", Decimal(2), None)
        await store.grant("t1", 100_000)
        quote = await store.check_quota("t1", "animatic", *HD, Decimal(6))
        assert (quote.price, quote.free, quote.paid, quote.allowed) == (150_000, 50_000, 100_000, True)
        quote = await store.check_quota("t1", "animatic", *HD, Decimal(7))
        assert not quote.allowed and "needs 125000" in quote.reason
        balance = await store.balance("t1")
        assert (balance.available, balance.reserved, balance.free_seconds) == (100_000, 0, Decimal(2))
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_partial_refund_after_qc_failure_is_new_entries_and_idempotent(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.add_free_grant("t1", "micros", Decimal(50_000), None)
        await store.grant("t1", 1_000_000)
        await store.reserve("t1", "j1", "animatic", *HD, Decimal(8))
        await store.settle("t1", "j1", Decimal(8))  # 200,000: 50,000 free, 150,000 paid
        entries_before = await pool.fetchval("SELECT count(*) FROM ledger_entries")
        assert await store.refund("t1", "j1", "qc:j1:1", 100_000, "qc failed: frozen frames") == 100_000
        assert await store.refund("t1", "j1", "qc:j1:1", 100_000, "retry of the same refund") == 100_000
        assert (await store.balance("t1")).available == 950_000
        assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == entries_before + 2
        # paid part refunded first; a second refund takes the last paid 50,000 and 50,000 of the free part
        await store.refund("t1", "j1", "qc:j1:2", 100_000, "qc failed again")
        assert (await store.balance("t1")).available == 1_000_000
        assert await account(pool, ledger.REVENUE) == 0
        assert await account(pool, ledger.FREE_USAGE) == 0
        with pytest.raises(RefundRefused):
            await store.refund("t1", "j1", "qc:j1:3", 1, "nothing left")
        await store.reserve("t1", "j2", "animatic", *HD, Decimal(8))
        with pytest.raises(RefundRefused):
            await store.refund("t1", "j2", "r", 1, "not settled yet")
        assert (await store.balance("t1")).spent == 0
        await assert_balanced(pool)
    finally:
        await pool.close()
