"""Requests per minute per API key: a token bucket per key, in this process.

In-process on purpose: a check costs no database round trip, which matters at thousands of
requests per second. With N gateway instances behind a balancer a key may get up to N times its
limit; the orchestrator's per-tenant admission (concurrency, RPM) is the platform-wide bound.
Headers follow the IETF RateLimit fields draft (RateLimit-Limit/-Remaining/-Reset) plus Retry-After.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class _Bucket:
    tokens: float
    updated: float


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


class RateLimiter:
    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}
        self._max_keys = max_keys

    def take(self, key: str, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # a crude bound on memory; only ever forgives
            bucket = self._buckets[key] = _Bucket(tokens=float(self.per_minute), updated=now)
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        full_in = math.ceil((self.per_minute - bucket.tokens) / self._rate) if self._rate else 0
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / self._rate))
        return Decision(allowed, self.per_minute, int(bucket.tokens), full_in, retry_after)


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
