"""The outbox wakes its relay: a committed transaction that wrote outbox rows notifies the schema's
channel once (the relay LISTENs there instead of polling); a rolled-back one does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import db, outbox


def test_a_commit_that_wrote_to_the_outbox_notifies_once(postgres_dsn: str, tmp_path: Path) -> None:
    asyncio.run(_notifies(postgres_dsn, tmp_path))


async def _notifies(dsn: str, no_service_migrations: Path) -> None:
    pool = await db.create_pool(dsn, "notifytest", 2)
    try:
        await db.migrate(pool, "notifytest", no_service_migrations)
        heard: asyncio.Queue[str] = asyncio.Queue()
        async with pool.acquire() as listener:
            def on_notify(*args: object) -> None:
                heard.put_nowait(str(args[2]))

            await listener.add_listener("outbox_notifytest", on_notify)
            message = jobs_pb2.JobSubmitted(job_id="j1", tenant_id="t1")
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await outbox.enqueue(conn, "jobs.v1.submitted", "j1", message)
                    await outbox.enqueue(conn, "jobs.v1.submitted", "j2", message)
                    await asyncio.sleep(0.2)
                    assert heard.empty(), "notified before the transaction committed"
                await asyncio.wait_for(heard.get(), timeout=5)
                await asyncio.sleep(0.2)
                assert heard.empty(), "one transaction notified more than once"

                await outbox.enqueue_many(conn, "jobs.v1.submitted", [("j3", message), ("j4", message)])
                await asyncio.wait_for(heard.get(), timeout=5)  # COPY fires the trigger too

                rolled_back = conn.transaction()
                await rolled_back.start()
                await outbox.enqueue(conn, "jobs.v1.submitted", "j5", message)
                await rolled_back.rollback()
                await asyncio.sleep(0.3)
                assert heard.empty(), "a rolled-back write notified the relay"
            await listener.remove_listener("outbox_notifytest", on_notify)
    finally:
        await pool.close()


def test_the_inbox_forgets_old_event_ids_only(postgres_dsn: str, tmp_path: Path) -> None:
    asyncio.run(_forgets(postgres_dsn, tmp_path))


async def _forgets(dsn: str, no_service_migrations: Path) -> None:
    pool = await db.create_pool(dsn, "inboxexpiry", 2)
    try:
        await db.migrate(pool, "inboxexpiry", no_service_migrations)
        await pool.execute("DELETE FROM inbox")
        async with pool.acquire() as conn:
            for n in range(5):
                assert await outbox.mark_processed(conn, "c", f"new{n}")
            assert not await outbox.mark_processed(conn, "c", "new0")
        await pool.execute("INSERT INTO inbox (consumer, event_id, processed_at)"
                           " SELECT 'c', 'old' || n, now() - interval '200 hours' FROM generate_series(1, 25) n")
        assert await outbox.forget_processed(pool, older_than_hours=192, batch=10) == 25  # three batches
        left = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM inbox")}
        assert left == {f"new{n}" for n in range(5)}
        async with pool.acquire() as conn:
            assert not await outbox.mark_processed(conn, "c", "new3")  # still a duplicate
            assert await outbox.mark_processed(conn, "c", "old1")  # forgotten: would apply again
    finally:
        await pool.close()
