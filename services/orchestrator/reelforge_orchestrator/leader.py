"""Leader election: a Postgres advisory lock held on a dedicated session decides who leads.

The lock is freed the moment the leader's session ends (a crash or kill -9 closes the socket), and
standbys poll for it twice a second, so one takes over well within five seconds. On taking over
the new leader bumps an epoch in `leader_lease`; every dispatch checks the epoch inside its own
transaction, so a deposed leader that has not noticed yet cannot dispatch anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import asyncpg

log = logging.getLogger(__name__)

LOCK_KEY = "reelforge-orchestrator-leader"


class LostLeadership(Exception):
    pass


class Leadership:
    def __init__(self, dsn: str, schema: str, poll_seconds: float = 0.5) -> None:
        self._dsn = dsn
        self._schema = schema
        self._poll = poll_seconds
        self._conn: asyncpg.Connection | None = None
        self.epoch = 0
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.leading = False

    async def acquire(self) -> int:
        """Waits until this instance leads; returns its epoch."""
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, server_settings={"search_path": self._schema})
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("leader election cannot reach postgres", extra={"error": str(exc)})
                await asyncio.sleep(self._poll)
                continue
            try:
                while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", LOCK_KEY):  # noqa: ASYNC110
                    await asyncio.sleep(self._poll)  # another session holds it; nothing to await but time
                self.epoch = int(await conn.fetchval(
                    "UPDATE leader_lease SET epoch = epoch + 1, holder = $1, since = now() WHERE id = 1"
                    " RETURNING epoch", self.holder))
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
            self.leading = True
            log.info("leading", extra={"epoch": self.epoch, "holder": self.holder})
            return self.epoch

    async def watch(self) -> None:
        """Returns never while leading; raises LostLeadership when the lock's session is gone."""
        assert self._conn is not None
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=3)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                self.leading = False
                raise LostLeadership(str(exc)) from exc

    async def release(self) -> None:
        if self._conn is not None:
            self.leading = False
            await self._conn.close()
            self._conn = None


async def check_epoch(conn: asyncpg.Connection, epoch: int) -> None:
    """Inside a transaction: fails unless `epoch` is still the current leader's."""
    current = await conn.fetchval("SELECT epoch FROM leader_lease WHERE id = 1 FOR SHARE")
    if current != epoch:
        raise LostLeadership(f"epoch {epoch} superseded by {current}")
