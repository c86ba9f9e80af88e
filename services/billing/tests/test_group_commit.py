"""Group commit: concurrent Reserve/Settle/Release calls in one statement keep every call's own semantics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import asyncpg
import grpc
import pytest

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_billing.pricing import NoRate
from reelforge_billing.store import InsufficientCredit, LedgerStore, UnknownReservation
from reelforge_core import grpc as core_grpc
from reelforge_local.infra import free_port
from services.billing.tests.billing_db import assert_balanced, open_store

JOB_PRICE = 200_000  # animatic at 1280x720 for 8 s


async def outcome(call: object) -> object:
    try:
        return await call  # type: ignore[misc]
    except Exception as exc:  # the test compares each call's own outcome
        return type(exc)


def batch_sizes(store: LedgerStore) -> list[int]:
    assert store.group_commit is not None
    return store.group_commit.stats.sizes


async def kinds(pool: asyncpg.Pool, job_id: str) -> list[str]:
    rows = await pool.fetch("SELECT kind FROM ledger_transactions WHERE job_id = $1 ORDER BY id", job_id)
    return [r["kind"] for r in rows]


@pytest.mark.asyncio
async def test_good_and_failing_items_in_one_batch_each_get_their_own_answer(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.grant("rich", 10 * JOB_PRICE)
        await store.grant("poor", JOB_PRICE + JOB_PRICE // 2)  # room for one job
        await store.reserve("rich", "to-settle", "animatic", 1280, 720, Decimal(8))
        await store.reserve("rich", "to-release", "animatic", 1280, 720, Decimal(8))
        before = len(batch_sizes(store))
        calls = [
            store.reserve("rich", "good-1", "animatic", 1280, 720, Decimal(8)),
            store.reserve("poor", "poor-1", "animatic", 1280, 720, Decimal(8)),
            store.reserve("rich", "no-rate", "no-such-model", 1280, 720, Decimal(8)),
            store.reserve("poor", "poor-2", "animatic", 1280, 720, Decimal(8)),
            store.settle("rich", "never-reserved", Decimal(8)),
            store.settle("rich", "to-settle", Decimal(4)),
            store.release("rich", "to-release"),
            store.release("rich", "never-reserved"),
            store.reserve("rich", "good-2", "animatic", 1280, 720, Decimal(8)),
        ]
        results = await asyncio.gather(*(outcome(call) for call in calls))
        assert batch_sizes(store)[before:] == [len(calls)]  # all of them in one statement
        assert store.group_commit is not None and store.group_commit.stats.fallbacks == 0
        assert results[0] == JOB_PRICE and results[8] == JOB_PRICE
        # the poor tenant's second job finds the first one's hold in the same transaction
        assert sorted(map(str, [results[1], results[3]])) == sorted([str(JOB_PRICE), str(InsufficientCredit)])
        assert results[2] is NoRate and results[4] is UnknownReservation
        assert results[5] == JOB_PRICE // 2 and results[6] == JOB_PRICE and results[7] == 0
        assert (await store.balance("poor")).available == JOB_PRICE // 2
        assert await kinds(pool, "to-settle") == ["reserve", "settle"]
        assert await kinds(pool, "to-release") == ["reserve", "release"]
        assert await kinds(pool, "no-rate") == []
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("bad_id", "error", "fallbacks"), [
    ("bad\x00id", asyncpg.DataError, 0),  # refused by PostgreSQL: sent alone, never in a batch
    ("bad\ud800id", asyncpg.DataError, 1),  # refused by the driver: fails its batch, which reruns item by item
])
async def test_a_value_that_is_refused_fails_only_its_own_call(
    postgres_dsn: str, bad_id: str, error: type[Exception], fallbacks: int
) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.grant("t1", 10 * JOB_PRICE)
        calls = [store.reserve("t1", f"ok-{i}", "animatic", 1280, 720, Decimal(8)) for i in range(5)]
        calls.insert(2, store.reserve("t1", bad_id, "animatic", 1280, 720, Decimal(8)))
        results = await asyncio.gather(*(outcome(call) for call in calls))
        assert store.group_commit is not None and store.group_commit.stats.fallbacks == fallbacks
        assert isinstance(results[2], type) and issubclass(results[2], error)
        assert [r for i, r in enumerate(results) if i != 2] == [JOB_PRICE] * 5
        assert await pool.fetchval("SELECT count(*) FROM reservations") == 5
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_duplicates_inside_one_batch_take_effect_once(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    try:
        await store.grant("t1", 10 * JOB_PRICE)
        reserved = await asyncio.gather(*(store.reserve("t1", "dup", "animatic", 1280, 720, Decimal(8))
                                          for _ in range(20)))
        settled = await asyncio.gather(*(store.settle("t1", "dup", Decimal(6)) for _ in range(20)))
        await store.reserve("t1", "dup-release", "animatic", 1280, 720, Decimal(8))
        released = await asyncio.gather(*(store.release("t1", "dup-release") for _ in range(20)))
        assert batch_sizes(store)[-4:] == [20, 20, 1, 20]
        assert reserved == [JOB_PRICE] * 20 and settled == [150_000] * 20
        assert sorted(released) == [0] * 19 + [JOB_PRICE]
        assert await kinds(pool, "dup") == ["reserve", "settle"]
        assert await kinds(pool, "dup-release") == ["reserve", "release"]
        assert (await store.balance("t1")).available == 10 * JOB_PRICE - 150_000
        await assert_balanced(pool)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_100_concurrent_reserves_in_batches_never_overdraw(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn, size=30)
    try:
        await store.grant("t1", 5 * JOB_PRICE + JOB_PRICE // 2)
        results = await asyncio.gather(*(outcome(store.reserve("t1", f"j{i}", "animatic", 1280, 720, Decimal(8)))
                                         for i in range(100)))
        assert results.count(JOB_PRICE) == 5 and results.count(InsufficientCredit) == 95
        balance = await store.balance("t1")
        assert (balance.available, balance.reserved) == (JOB_PRICE // 2, 5 * JOB_PRICE)
        await assert_balanced(pool)
    finally:
        await pool.close()


TOKEN = "billing-kill-test-token"


def _start_server(dsn: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "REELFORGE_BILLING_DATABASE_URL": dsn,
        "REELFORGE_BILLING_GRPC_PORT": str(port),
        "REELFORGE_BILLING_HTTP_PORT": "0",
        "REELFORGE_BILLING_CONSUME_USAGE": "false",
        "REELFORGE_BILLING_PUBLISH_EVENTS": "false",
        "REELFORGE_BILLING_RECONCILE_INTERVAL_SECONDS": "0",
        "REELFORGE_BILLING_LOG_LEVEL": "WARNING",
        "REELFORGE_BILLING_OPERATOR_TOKEN": TOKEN,
    }
    server = subprocess.Popen([sys.executable, "-m", "reelforge_billing", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, port


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_kill_9_mid_batch_loses_nothing_acknowledged(postgres_dsn: str) -> None:
    pool, store = await open_store(postgres_dsn)
    server, port = _start_server(postgres_dsn)
    channel = core_grpc.channel(f"127.0.0.1:{port}", TOKEN)
    stub = billing_pb2_grpc.BillingServiceStub(channel)
    tenants = [f"t{i}" for i in range(8)]
    acknowledged: dict[str, int] = {}
    attempted: list[tuple[str, str]] = []
    try:
        for tenant in tenants:
            await store.grant(tenant, 10_000 * JOB_PRICE)
        deadline = time.monotonic() + 60
        while True:
            try:
                await stub.GetBalance(billing_pb2.GetBalanceRequest(tenant_id="probe"), timeout=1)
                break
            except grpc.aio.AioRpcError:
                assert server.poll() is None and time.monotonic() < deadline, "billing server did not start"
                await asyncio.sleep(0.2)

        async def client(n: int) -> None:
            for i in range(10_000):
                tenant, job = tenants[(n + i) % len(tenants)], f"c{n}-{i}"
                attempted.append((tenant, job))
                try:
                    reply = await stub.Reserve(billing_pb2.ReserveRequest(
                        tenant_id=tenant, job_id=job, model="animatic", width=1280, height=720, seconds=8),
                        timeout=10)
                except grpc.aio.AioRpcError:
                    return  # the server died with this call in flight: not acknowledged
                acknowledged[job] = reply.amount_micros
                if len(acknowledged) == 300:
                    enough.set()

        enough = asyncio.Event()
        clients = [asyncio.create_task(client(n)) for n in range(32)]
        await enough.wait()
        server.send_signal(signal.SIGKILL)
        server.wait()
        await asyncio.gather(*clients)

        held = {r["job_id"]: r["held_micros"] for r in await pool.fetch("SELECT job_id, held_micros FROM reservations")}
        assert all(held.get(job) == amount for job, amount in acknowledged.items())
        await assert_balanced(pool)
        # Every call in flight at the crash is retried (the orchestrator's way): each job is held exactly once.
        retry = LedgerStore(pool)
        again = await asyncio.gather(*(retry.reserve(t, j, "animatic", 1280, 720, Decimal(8)) for t, j in attempted))
        assert again == [JOB_PRICE] * len(attempted)
        assert await pool.fetchval("SELECT count(*) FROM ledger_transactions WHERE kind = 'reserve'") == len(attempted)
        await assert_balanced(pool)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        await channel.close()
        await pool.close()
