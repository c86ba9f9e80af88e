"""One LISTEN connection per process, shared by everything in it that waits for a NOTIFY (fan-out in process).

A part subscribes to a channel, optionally to one payload on it (e.g. a job id), and gets a
`Subscription` whose `wait` returns when a matching notification arrives; or registers a callback that
runs as each notification arrives (`on_notify`), and one told when the connection is up or down
(`on_state`), e.g. for a cache that may only be trusted while its invalidations can be heard.
Notifications are hints, not data: a subscriber re-reads what it follows after each wake-up, and
after a fallback interval without one, so a notification lost while the connection was down costs
latency, never a change. Every subscriber is also woken whenever the connection is (re)established,
since what was notified while it was down is gone. The connection is a pooled one (it has the pool's
schema and settings) held for as long as the listener runs; a dead one is noticed at once (termination
callback) or by a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


class Subscription:
    """A wake-up flag for one subscriber; use as a context manager (or `close`) to unsubscribe."""

    def __init__(self, listener: Listener, channel: str, payload: str | None) -> None:
        self._listener = listener
        self.channel = channel
        self.payload = payload
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, fallback_seconds: float) -> bool:
        """True when woken (a notification or a reconnect since the last wait), False after `fallback_seconds`."""
        try:
            await asyncio.wait_for(self._woken.wait(), fallback_seconds)
        except TimeoutError:
            return False
        self._woken.clear()  # a notification after this wakes the next wait; its commit precedes our re-read
        return True

    def close(self) -> None:
        self._listener._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class Listener:
    def __init__(self, pool: asyncpg.Pool, channels: Sequence[str], heartbeat_seconds: float = 5.0,
                 retry_seconds: float = 1.0) -> None:
        self._pool = pool
        self._channels = tuple(channels)
        self._heartbeat = heartbeat_seconds
        self._retry = retry_seconds
        # channel -> payload (None: every payload) -> subscribers
        self._subscribers: dict[str, dict[str | None, set[Subscription]]] = {c: {} for c in self._channels}
        self._callbacks: dict[str, list[Callable[[str], None]]] = {c: [] for c in self._channels}
        self._state_callbacks: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.live = False
        self.connections = 0  # how many times the connection was (re)established
        self.backend_pid: int | None = None

    def subscribe(self, channel: str, payload: str | None = None) -> Subscription:
        """Subscribes (starting the listener on the running loop if it is not yet running)."""
        if channel not in self._subscribers:
            raise ValueError(f"not listening on {channel!r}")
        self.start()
        subscription = Subscription(self, channel, payload)
        self._subscribers[channel].setdefault(payload, set()).add(subscription)
        return subscription

    def on_notify(self, channel: str, callback: Callable[[str], None]) -> None:
        """`callback(payload)` for every notification on `channel`, as it arrives (on the event loop)."""
        self._callbacks[channel].append(callback)

    def on_state(self, callback: Callable[[bool], None]) -> None:
        """`callback(True)` when the connection listens (again), `callback(False)` when it is lost."""
        self._state_callbacks.append(callback)

    def _unsubscribe(self, subscription: Subscription) -> None:
        by_payload = self._subscribers[subscription.channel]
        found = by_payload.get(subscription.payload)
        if found is not None:
            found.discard(subscription)
            if not found:
                del by_payload[subscription.payload]

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="pg-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: subscribers fall back to their re-reads; we try again
                log.warning("notification listener lost; reconnecting",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(self._retry)

    async def _listen(self) -> None:
        lost = asyncio.Event()

        def terminated(_: Any) -> None:
            lost.set()

        async with self._pool.acquire() as conn:
            conn.add_termination_listener(terminated)
            for channel in self._channels:
                await conn.add_listener(channel, self._on_notify)
            self.connections += 1
            self.backend_pid = conn.get_server_pid()
            self._set_live(True)
            self._wake_all()  # whatever was notified before (or while down) may have been missed
            try:
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._heartbeat)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1")  # a connection dead without a word must not be kept
                raise ConnectionError("listening connection closed")
            finally:
                self._set_live(False)
                self.backend_pid = None
                conn.remove_termination_listener(terminated)  # the pool hands the connection on
                if not conn.is_closed():
                    for channel in self._channels:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(channel, self._on_notify)

    def _set_live(self, live: bool) -> None:
        self.live = live
        for callback in self._state_callbacks:
            callback(live)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for callback in self._callbacks.get(channel, ()):
            callback(payload)
        by_payload = self._subscribers.get(channel, {})
        for key in (payload, None):
            for subscription in by_payload.get(key, ()):
                subscription.wake()

    def _wake_all(self) -> None:
        for by_payload in self._subscribers.values():
            for subscriptions in by_payload.values():
                for subscription in subscriptions:
                    subscription.wake()
