"""Keeps every instance's key cache honest: LISTEN for key and tenant changes, clear the cache on each.

While the listening connection is down the cache is off (every request verifies its key in the
database), so a revocation is never missed, only the cache's saving.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from reelforge_gateway.api.auth import KeyCache
from reelforge_gateway.tenancy import KEY_CHANGES

log = logging.getLogger(__name__)


async def follow(pool: asyncpg.Pool, cache: KeyCache, heartbeat_seconds: float = 5.0) -> None:
    def changed(*_: Any) -> None:
        cache.clear()

    while True:
        try:
            async with pool.acquire() as conn:
                await conn.add_listener(KEY_CHANGES, changed)
                cache.clear()
                cache.live = True
                try:
                    while True:
                        await asyncio.sleep(heartbeat_seconds)
                        await conn.fetchval("SELECT 1")  # a dead connection must not leave a stale cache on
                finally:
                    cache.live = False
                    cache.clear()
                    if not conn.is_closed():
                        await conn.remove_listener(KEY_CHANGES, changed)
        except Exception as exc:  # any failure: the cache is off and we try again; never stop the service
            log.warning("key change feed lost; key cache off until it is back",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(1.0)
