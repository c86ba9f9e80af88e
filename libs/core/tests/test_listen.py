"""The shared LISTEN connection: notifications reach the subscribers of their channel and payload (and the
callbacks), and a killed connection is replaced, waking every subscriber and telling the state callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reelforge_core import db
from reelforge_core.listen import Listener


def test_fan_out_by_channel_and_payload_and_reconnect(postgres_dsn: str) -> None:
    asyncio.run(_listen(postgres_dsn))


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    assert condition(), "condition not met in time"


async def _listen(dsn: str) -> None:
    pool = await db.create_pool(dsn, "listentest", 3)
    listener = Listener(pool, ["jobs_x", "keys_x"], heartbeat_seconds=0.2, retry_seconds=0.1)
    states: list[bool] = []
    heard: list[str] = []
    listener.on_state(states.append)
    listener.on_notify("keys_x", heard.append)
    try:
        with listener.subscribe("jobs_x", "j1") as one, listener.subscribe("jobs_x") as every:
            await _until(lambda: listener.live)
            assert await one.wait(1) and await every.wait(1)  # connecting wakes everyone
            assert states == [True]

            await pool.execute("SELECT pg_notify('jobs_x', 'j2')")
            assert await every.wait(2)
            assert not await one.wait(0.2)  # another job's notification

            await pool.execute("SELECT pg_notify('jobs_x', 'j1')")
            assert await one.wait(2) and await every.wait(2)

            await pool.execute("SELECT pg_notify('keys_x', 'k1')")
            await _until(lambda: heard == ["k1"])
            assert not await every.wait(0.1)  # another channel

            pid = listener.backend_pid
            assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
            await _until(lambda: listener.connections == 2 and listener.live)
            assert states == [True, False, True] and listener.backend_pid != pid
            assert await one.wait(1)  # woken by the reconnect: what was notified meanwhile is lost
            await pool.execute("SELECT pg_notify('jobs_x', 'j1')")
            assert await one.wait(2)
        await pool.execute("SELECT pg_notify('jobs_x', 'j1')")  # no subscriber left: nothing to wake
        await asyncio.sleep(0.1)
    finally:
        await listener.close()
        await pool.close()
    assert states[-1] is False
