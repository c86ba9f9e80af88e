"""Keeps every instance's key cache honest: the cache is cleared on each NOTIFY of a key or tenant change.

The notifications come through the process's shared listening connection (reelforge_core.listen). While
it is down the cache is off (every request verifies its key in the database), so a revocation is never
missed, only the cache's saving.
"""

from __future__ import annotations

from reelforge_core.listen import Listener
from reelforge_gateway.api.auth import KeyCache
from reelforge_gateway.tenancy import KEY_CHANGES


def follow(feed: Listener, cache: KeyCache) -> None:
    """Ties `cache` to `feed` (which must listen on KEY_CHANGES); the cache is on while `feed` listens."""

    def changed(_: str) -> None:
        cache.clear()

    def listening(live: bool) -> None:
        cache.clear()
        cache.live = live

    feed.on_notify(KEY_CHANGES, changed)
    feed.on_state(listening)
