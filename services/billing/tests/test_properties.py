"""Property-based: any sequence of reserve/settle/release/refund/duplicate calls leaves the ledger
balanced, conserves money and never charges a job twice; concurrency never overdraws."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reelforge_billing import ledger
from reelforge_billing.pricing import Rate, price_micros
from reelforge_billing.store import (
    InsufficientCredit,
    LedgerStore,
    RefundRefused,
    ReservationClosed,
    UnknownReservation,
)
from services.billing.tests.billing_db import assert_balanced, open_store

SIZES = [(640, 360, 10_000), (1280, 720, 25_000), (1920, 1080, 50_000)]
JOBS = [f"job{i}" for i in range(5)]
seconds_st = st.decimals(min_value=Decimal("0.5"), max_value=Decimal(20), places=1)


@dataclass(frozen=True)
class Reserve:
    job: str
    size: int
    seconds: Decimal


@dataclass(frozen=True)
class Settle:
    job: str
    seconds: Decimal


@dataclass(frozen=True)
class Release:
    job: str


@dataclass(frozen=True)
class Refund:
    job: str
    refund_no: int
    micros: int


@dataclass(frozen=True)
class TopUp:
    micros: int


@dataclass(frozen=True)
class FreeGrant:
    unit: str
    amount: int


reserve_st = st.builds(Reserve, st.sampled_from(JOBS), st.integers(0, 2), seconds_st)
operation = st.one_of(
    reserve_st,
    reserve_st,
    st.builds(Settle, st.sampled_from(JOBS), st.decimals(min_value=Decimal(0), max_value=Decimal(25), places=2)),
    st.builds(Settle, st.sampled_from(JOBS), st.decimals(min_value=Decimal(0), max_value=Decimal(25), places=2)),
    st.builds(Release, st.sampled_from(JOBS)),
    st.builds(Refund, st.sampled_from(JOBS), st.integers(0, 2), st.integers(1, 60_000)),
    st.builds(Refund, st.sampled_from(JOBS), st.integers(0, 2), st.integers(1, 60_000)),
    st.builds(TopUp, st.integers(1, 1_000_000)),
    st.builds(FreeGrant, st.sampled_from(["seconds", "micros"]), st.integers(1, 300_000)),
)
# Start most tenants with credit and some free grants, so that jobs get held, settled and refunded.
opening = st.lists(
    st.one_of(st.builds(TopUp, st.integers(100_000, 3_000_000)),
              st.builds(FreeGrant, st.sampled_from(["seconds", "micros"]), st.integers(1, 300_000))),
    min_size=1,
    max_size=3,
)
# Each operation may be delivered again right away (a retried gRPC call, a redelivered event).
plan_st = st.builds(
    lambda first, rest: [(op, False) for op in first] + rest,
    opening, st.lists(st.tuples(operation, st.booleans()), min_size=10, max_size=40),
)

_tenants = itertools.count()


async def apply(store: LedgerStore, tenant: str, op: object, first_results: dict[tuple[str, str], int]) -> None:
    """Applies one operation; checks that a repeat of an accepted call answers as the first did."""
    job = f"{tenant}-{getattr(op, 'job', '')}"  # job ids are global; each example has jobs of its own
    try:
        if isinstance(op, Reserve):
            width, height, _ = SIZES[op.size]
            result = await store.reserve(tenant, job, "animatic", width, height, op.seconds)
            key = ("reserve", op.job)
        elif isinstance(op, Settle):
            result = await store.settle(tenant, job, op.seconds)
            key = ("settle", op.job)
        elif isinstance(op, Release):
            await store.release(tenant, job)
            return
        elif isinstance(op, Refund):
            result = await store.refund(tenant, job, f"{job}:{op.refund_no}", op.micros, "qc")
            key = ("refund", f"{op.job}:{op.refund_no}")
        elif isinstance(op, TopUp):
            await store.grant(tenant, op.micros)
            return
        else:
            assert isinstance(op, FreeGrant)
            await store.add_free_grant(tenant, op.unit, Decimal(op.amount), None)  # type: ignore[arg-type]
            return
    except (InsufficientCredit, UnknownReservation, ReservationClosed, RefundRefused):
        return
    assert first_results.setdefault(key, result) == result, f"{key} answered differently the second time"


async def check_invariants(pool: asyncpg.Pool, store: LedgerStore, tenant: str) -> None:
    await assert_balanced(pool)
    # one reserve and at most one closing (settle or release) per job, never both
    per_job = await pool.fetch(
        "SELECT job_id, array_agg(kind ORDER BY id) AS kinds FROM ledger_transactions"
        " WHERE tenant_id = $1 AND job_id IS NOT NULL GROUP BY job_id", tenant,
    )
    for row in per_job:
        kinds = [k for k in row["kinds"] if k != "refund"]
        assert kinds in (["reserve"], ["reserve", "settle"], ["reserve", "release"]), (row["job_id"], row["kinds"])
    reservations = await pool.fetch("SELECT * FROM reservations WHERE tenant_id = $1", tenant)
    for r in reservations:
        if r["state"] == "settled":
            expected = min(price_micros(Rate("", 0, r["micros_per_second"]), r["settled_seconds"]), r["held_micros"])
            assert r["charged_micros"] == expected
            assert 0 <= r["refunded_micros"] <= r["charged_micros"]
    held = [r for r in reservations if r["state"] == "held"]
    settled = [r for r in reservations if r["state"] == "settled"]
    event(f"settled jobs: {min(len(settled), 2)}")
    event(f"refunds: {min(sum(1 for r in settled if r['refunded_micros']), 1)}")
    balance = await store.balance(tenant)
    assert balance.available >= 0  # prepaid: never overdrawn
    assert balance.reserved == sum(r["held_micros"] for r in held)
    assert balance.spent == sum(r["charged_micros"] - r["refunded_micros"] for r in settled)

    async def tenant_sum(account: str) -> int:
        return int(await pool.fetchval(
            "SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e JOIN ledger_transactions t"
            " ON t.id = e.transaction_id WHERE t.tenant_id = $1 AND e.account_id = $2", tenant, account,
        ))

    revenue, free_usage = await tenant_sum(ledger.REVENUE), await tenant_sum(ledger.FREE_USAGE)
    assert revenue + free_usage == balance.spent
    # money is conserved: every micro topped up is available, held (paid part) or earned
    topped_up = -await tenant_sum(ledger.GRANTS)
    held_paid = sum(r["held_micros"] - r["held_free_micros"] for r in held)
    assert topped_up == balance.available + held_paid + revenue
    # free grants pay exactly what they are used for; none goes negative
    held_free = sum(r["held_free_micros"] for r in held)
    assert -await tenant_sum(ledger.PROMOTIONS) == free_usage + held_free
    assert not await pool.fetch(
        "SELECT id FROM free_grants WHERE tenant_id = $1 AND (remaining < 0 OR remaining > amount)", tenant
    )


async def run_plan(dsn: str, plan: list[tuple[object, bool]], concurrent: bool) -> None:
    pool, store = await open_store(dsn, size=12 if concurrent else 2)
    try:
        tenant = f"prop{next(_tenants)}"
        first_results: dict[tuple[str, str], int] = {}
        if concurrent:  # every call and its duplicate race each other
            calls = [op for op, repeat in plan for op in ([op, op] if repeat else [op])]
            await asyncio.gather(*(apply(store, tenant, op, first_results) for op in calls))
        else:
            for op, repeat in plan:
                await apply(store, tenant, op, first_results)
                if repeat:
                    await apply(store, tenant, op, first_results)
        await check_invariants(pool, store, tenant)
    finally:
        await pool.close()


# Each example uses a tenant of its own in the test's database.
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.timeout(300)
@settings(PROPERTY, max_examples=60)
@given(plan=plan_st)
def test_random_sequences_keep_the_ledger_balanced_and_never_double_charge(
    postgres_dsn: str, plan: list[tuple[object, bool]]
) -> None:
    asyncio.run(run_plan(postgres_dsn, plan, concurrent=False))


@pytest.mark.timeout(300)
@settings(PROPERTY, max_examples=20)
@given(plan=plan_st)
def test_concurrent_random_sequences_keep_the_invariants(postgres_dsn: str, plan: list[tuple[object, bool]]) -> None:
    asyncio.run(run_plan(postgres_dsn, plan, concurrent=True))


@pytest.mark.asyncio
async def test_100_concurrent_reserves_against_a_small_balance_never_overdraw(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn, size=30)
    try:
        await store.add_free_grant("t1", "seconds", Decimal(10), None)  # 2.5 jobs of 4 s free
        await store.grant("t1", 250_000)  # plus room for 6 paid jobs of 40,000 (after the free 2 s of the 3rd)

        async def attempt(i: int) -> bool:
            try:
                await store.reserve("t1", f"job{i % 100}", "animatic", 640, 360, Decimal(4))
                return True
            except InsufficientCredit:
                return False

        # 100 distinct jobs, each also sent a second time concurrently (200 calls)
        results = await asyncio.gather(*(attempt(i) for i in range(200)))
        held = await pool.fetchval("SELECT count(*) FROM reservations")
        balance = await store.balance("t1")
        # 10 free s + 250,000 credit = 100,000 + 250,000 of 40,000-jobs: 8 jobs (320,000), 30,000 left
        assert held == 8 and sum(results) >= 8
        assert (balance.available, balance.reserved, balance.free_seconds) == (30_000, 320_000, Decimal(0))
        await assert_balanced(pool)
    finally:
        await pool.close()
