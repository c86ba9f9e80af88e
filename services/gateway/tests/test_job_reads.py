"""Status reads kept in memory: a kept job is answered without the database until it changes; any change
(status, cancel request, QC report, deletion) drops it as soon as its notification arrives, a read in
flight across a change is not kept, nothing is kept while the listening connection is down, and a kept
job never answers another tenant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg

from reelforge_core import db
from reelforge_core.listen import Listener
from reelforge_gateway import follow, store
from reelforge_gateway.__main__ import MIGRATIONS, SCHEMA
from reelforge_gateway.job_reads import JobReader, RowCache


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert condition(), "condition not met in time"


async def _silently(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """Changes the database without firing triggers (no notification): shows whether a read is kept."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


def _job(tenant_id: str) -> store.NewJob:
    return store.NewJob(tenant_id=tenant_id, model="animatic", prompt="A kettle", seconds=4, width=640,
                        height=360, narration=None, voice="alloy", seed=1)


def test_kept_until_changed(postgres_dsn: str) -> None:
    asyncio.run(_kept_until_changed(postgres_dsn))


async def _kept_until_changed(dsn: str) -> None:
    pool = await db.create_pool(dsn, SCHEMA, 4)
    await db.migrate(pool, SCHEMA, MIGRATIONS)
    feed = Listener(pool, [follow.CHANNEL], heartbeat_seconds=0.2, retry_seconds=0.1)
    reader = JobReader(pool, cache_seconds=60)
    reader.cache.follow(feed, follow.CHANNEL)
    try:
        tenant, _ = await store.create_tenant(pool, "acme")
        other, _ = await store.create_tenant(pool, "globex")
        job_id = (await store.insert_job(pool, _job(tenant)))["job_id"]

        # Not listening yet: every read goes to the database.
        assert (await reader.get(tenant, job_id))["progress"] == 0
        await _silently(pool, "UPDATE jobs SET progress = 5 WHERE job_id = $1", job_id)
        assert (await reader.get(tenant, job_id))["progress"] == 5

        feed.start()
        await _until(lambda: reader.cache.on)
        assert (await reader.get(tenant, job_id))["progress"] == 5
        await _silently(pool, "UPDATE jobs SET progress = 6 WHERE job_id = $1", job_id)
        assert (await reader.get(tenant, job_id))["progress"] == 5, "kept: the database was not read"
        assert await reader.get(other, job_id) is None, "a kept job answers only its tenant"

        # A change that notifies drops the job; the next read finds it.
        await pool.execute("UPDATE jobs SET progress = 7 WHERE job_id = $1", job_id)
        await _until(lambda: reader.cache.get(tenant, job_id) is None, 2.0)
        assert (await reader.get(tenant, job_id))["progress"] == 7

        await pool.execute("UPDATE jobs SET cancel_requested_at = now() WHERE job_id = $1", job_id)
        await _until(lambda: reader.cache.get(tenant, job_id) is None, 2.0)
        assert (await reader.get(tenant, job_id))["cancel_requested_at"] is not None

        await pool.execute(
            "INSERT INTO qc_reports (job_id, tenant_id, render_id, render_attempt, passed, summary, report)"
            " VALUES ($1, $2, 'r1', 1, true, '{}', '{}')", job_id, tenant)
        await _until(lambda: reader.cache.get(tenant, job_id) is None, 2.0)
        assert (await reader.get(tenant, job_id))["qc_render_id"] == "r1"

        assert await store.delete_job(pool, tenant, job_id)
        await _until(lambda: reader.cache.get(tenant, job_id) is None, 2.0)
        assert await reader.get(tenant, job_id) is None

        # The listening connection lost: nothing kept until it listens again.
        second = (await store.insert_job(pool, _job(tenant)))["job_id"]
        assert (await reader.get(tenant, second))["progress"] == 0
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", feed.backend_pid)
        await _until(lambda: not reader.cache.on)
        await _silently(pool, "UPDATE jobs SET progress = 9 WHERE job_id = $1", second)
        assert (await reader.get(tenant, second))["progress"] == 9
        await _until(lambda: reader.cache.on)
    finally:
        await feed.close()
        await pool.close()


def test_a_read_in_flight_across_a_change_is_not_kept() -> None:
    cache = RowCache(entries=10, seconds=60)
    cache.live = True
    row = {"job_id": "job_1"}
    began = cache.mark()
    cache.changed("job_1")  # committed while the read's query ran: the row may be from before it
    cache.keep("t1", "job_1", row, began)  # type: ignore[arg-type]
    assert cache.get("t1", "job_1") is None

    began = cache.mark()
    cache.changed("job_2")  # another job's change does not matter
    cache.keep("t1", "job_1", row, began)  # type: ignore[arg-type]
    assert cache.get("t1", "job_1") is row

    began = cache.mark()
    cache.live = False
    cache.clear()  # what losing the listening connection does
    cache.live = True
    cache.keep("t1", "job_1", row, began)  # type: ignore[arg-type]
    assert cache.get("t1", "job_1") is None


def test_bounded_in_entries_and_time() -> None:
    cache = RowCache(entries=2, seconds=0.05)
    cache.live = True
    for n in range(3):
        cache.keep("t1", f"job_{n}", {"n": n}, cache.mark())  # type: ignore[arg-type]
    assert cache.get("t1", "job_0") is None and cache.get("t1", "job_2") == {"n": 2}
    time.sleep(0.06)
    assert cache.get("t1", "job_2") is None

    off = RowCache(entries=0, seconds=5)
    off.live = True
    off.keep("t1", "job_0", {"n": 0}, off.mark())  # type: ignore[arg-type]
    assert off.get("t1", "job_0") is None


def test_a_kept_row_is_rendered_once() -> None:
    cache = RowCache(entries=10, seconds=60)
    cache.live = True
    renders: list[object] = []

    def render(row: object) -> bytes:
        renders.append(row)
        return b"{}"

    kept, fresh = {"n": 1}, {"n": 2}
    cache.keep("t1", "job_1", kept, cache.mark())  # type: ignore[arg-type]
    assert cache.answer("job_1", kept, render) == cache.answer("job_1", kept, render) == b"{}"  # type: ignore[arg-type]
    assert renders == [kept]
    cache.answer("job_1", fresh, render)  # type: ignore[arg-type]  # not the kept row: rendered, not kept
    cache.answer("job_1", fresh, render)  # type: ignore[arg-type]
    assert renders == [kept, fresh, fresh]
    cache.changed("job_1")
    cache.answer("job_1", kept, render)  # type: ignore[arg-type]
    assert renders == [kept, fresh, fresh, kept]
