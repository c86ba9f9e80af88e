"""Requests per minute per API key and per tenant: token buckets shared by every gateway instance.

A bucket lives in PostgreSQL (gateway.rate_buckets, refilled at its limit per minute, burst = the
limit). An instance does not ask the database per request: it leases a few tokens at a time (about 2%
of the limit, at least one) in one statement and spends them locally, and remembers an empty bucket
until it refills. So the platform-wide count never exceeds the limit plus one unspent lease per
instance, and a check costs a database round trip only once per lease.
Headers follow the IETF RateLimit fields draft (RateLimit-Limit/-Remaining/-Reset) plus Retry-After.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        headers = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                   "RateLimit-Reset": str(self.reset_seconds)}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


@dataclass(frozen=True)
class Limit:
    """One bucket to take a token from: e.g. `key:<key id>` at 600 requests per minute."""

    bucket: str
    per_minute: int
    code: str = "rate_limited"  # the problem code when this bucket is the one that is empty


@dataclass
class _Lease:
    per_minute: int
    tokens: int = 0              # leased from the shared bucket, not yet spent
    shared_left: float = 0.0     # the shared bucket's tokens after our last lease
    empty_until: float = 0.0     # monotonic time before which asking again is pointless


_LEASE = """
INSERT INTO rate_buckets AS b (bucket, capacity, tokens, wanted, granted, updated_at)
SELECT name, cap, cap - least(want, floor(cap)), want, least(want, floor(cap))::int, clock_timestamp()
FROM unnest($1::text[], $2::float8[], $3::int[]) AS r(name, cap, want)
ORDER BY name
ON CONFLICT (bucket) DO UPDATE SET
    capacity = EXCLUDED.capacity,
    wanted = EXCLUDED.wanted,
    granted = least(EXCLUDED.wanted, floor(rate_refilled(b.tokens, b.updated_at, EXCLUDED.updated_at,
                                                         EXCLUDED.capacity)))::int,
    tokens = rate_refilled(b.tokens, b.updated_at, EXCLUDED.updated_at, EXCLUDED.capacity)
             - least(EXCLUDED.wanted, floor(rate_refilled(b.tokens, b.updated_at, EXCLUDED.updated_at,
                                                          EXCLUDED.capacity))),
    updated_at = EXCLUDED.updated_at
RETURNING bucket, tokens, granted
"""


class SharedRateLimiter:
    """Token buckets in PostgreSQL, spent through small local leases (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, lease_fraction: float = 0.02, max_lease: int = 100,
                 max_buckets: int = 100_000) -> None:
        self._pool = pool
        self._lease_fraction = lease_fraction
        self._max_lease = max_lease
        self._max_buckets = max_buckets
        self._leases: dict[str, _Lease] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lease_size(self, per_minute: int) -> int:
        return max(1, min(self._max_lease, int(per_minute * self._lease_fraction)))

    async def take(self, limits: Sequence[Limit]) -> tuple[Decision, Limit] | None:
        """Spends one token from every bucket, or none if any is empty. Returns the decision to report
        (the denying bucket's, else the one with the fewest tokens left) and its limit; None if no limit applies."""
        active = sorted((limit for limit in limits if limit.per_minute > 0), key=lambda limit: limit.bucket)
        if not active:
            return None
        now = time.monotonic()
        leases = [self._lease(limit) for limit in active]
        if any(lease.tokens < 1 and lease.empty_until <= now for lease in leases):
            await self._refill(active, leases)
            now = time.monotonic()
        for limit, lease in zip(active, leases, strict=True):
            if lease.tokens < 1:
                return self._denied(limit, lease, now), limit
        for lease in leases:
            lease.tokens -= 1
        tightest = min(zip(active, leases, strict=True), key=lambda pair: self._remaining(pair[1]))
        return self._allowed(*tightest), tightest[0]

    def _lease(self, limit: Limit) -> _Lease:
        lease = self._leases.get(limit.bucket)
        if lease is None or lease.per_minute != limit.per_minute:
            if len(self._leases) >= self._max_buckets:
                self._leases.clear()  # forgets unspent leases: only ever stricter
                self._locks.clear()
            lease = self._leases[limit.bucket] = _Lease(per_minute=limit.per_minute)
        return lease

    async def _refill(self, limits: list[Limit], leases: list[_Lease]) -> None:
        # One lock per bucket, taken in name order: concurrent requests of one instance share a lease
        # instead of each asking the database.
        locks = [self._locks.setdefault(limit.bucket, asyncio.Lock()) for limit in limits]
        for lock in locks:
            await lock.acquire()
        try:
            now = time.monotonic()
            wanted = [(limit, lease) for limit, lease in zip(limits, leases, strict=True)
                      if lease.tokens < 1 and lease.empty_until <= now]
            if not wanted:
                return
            rows = await self._pool.fetch(
                _LEASE, [limit.bucket for limit, _ in wanted], [float(limit.per_minute) for limit, _ in wanted],
                [self.lease_size(limit.per_minute) for limit, _ in wanted])
            by_bucket = {row["bucket"]: row for row in rows}
            for limit, lease in wanted:
                row = by_bucket[limit.bucket]
                lease.tokens += int(row["granted"])
                lease.shared_left = float(row["tokens"])
                if lease.tokens < 1:
                    lease.empty_until = now + (1.0 - lease.shared_left) * 60.0 / limit.per_minute
        finally:
            for lock in reversed(locks):
                lock.release()

    @staticmethod
    def _remaining(lease: _Lease) -> int:
        return lease.tokens + int(lease.shared_left)

    def _allowed(self, limit: Limit, lease: _Lease) -> Decision:
        remaining = self._remaining(lease)
        full_in = math.ceil((limit.per_minute - remaining) * 60.0 / limit.per_minute)
        return Decision(True, limit.per_minute, remaining, max(0, full_in), 0)

    @staticmethod
    def _denied(limit: Limit, lease: _Lease, now: float) -> Decision:
        retry_after = max(1, math.ceil(lease.empty_until - now))
        return Decision(False, limit.per_minute, 0, retry_after, retry_after)


class RateLimitHeaders:
    """Copies the decision the auth dependency left in the request state onto the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            decision = scope.get("state", {}).get("rate_limit")
            if message["type"] == "http.response.start" and isinstance(decision, Decision):
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()
                         if k.lower().encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
