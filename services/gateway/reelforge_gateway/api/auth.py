"""Bearer API-key authentication: the caller's tenant, or a 401 problem."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from fastapi import Request

from reelforge_gateway import keys, store
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.api.ratelimit import RateLimiter
from reelforge_gateway.moderation import Moderator

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="reelforge"'}


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]


class KeyCache:
    """Keys verified in the last few seconds, by SHA-256 of the key (never the plaintext).

    Saves a database round trip per request; a revoked or expired key keeps working on this
    instance for at most `ttl_seconds`.
    """

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, tuple[float, Caller]] = {}

    def get(self, token: str) -> Caller | None:
        if self._ttl <= 0:
            return None
        entry = self._entries.get(keys.digest(token))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token: str, caller: Caller) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[keys.digest(token)] = (time.monotonic() + self._ttl, caller)


async def authenticate(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "missing_api_key", "An API key is required",
                      "Send it as 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    token = token.strip()
    cache: KeyCache = request.app.state.key_cache
    caller = cache.get(token)
    if caller is None:
        prefix = keys.prefix_of(token)
        pool: asyncpg.Pool = request.app.state.pool
        row = await store.find_active_key(pool, prefix) if prefix else None
        if row is None or not keys.matches(token, row["key_hash"]):
            raise Problem(401, "invalid_api_key", "The API key is not valid", headers=_CHALLENGE)
        caller = Caller(tenant_id=row["tenant_id"], key_id=row["key_id"], scopes=frozenset(row["scopes"]))
        cache.put(token, caller)
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is not None:
        decision = limiter.take(caller.key_id)
        request.state.rate_limit = decision
        if not decision.allowed:
            raise Problem(429, "rate_limited", "Too many requests",
                          f"This key may make {decision.limit} requests per minute; retry after"
                          f" {decision.retry_after} s", headers=decision.headers())
    return caller


def moderate(request: Request, prompt: str, narration: str | None = None) -> None:
    """The moderation hook: 422 `prompt_blocked` before anything is stored."""
    moderator: Moderator = request.app.state.moderator
    term = moderator.blocked_term(prompt, narration)
    if term is not None:
        raise Problem(422, "prompt_blocked", "The prompt was blocked by moderation",
                      f"It contains the blocked term {term!r}", param="prompt")


def require_scope(caller: Caller, scope: str) -> None:
    if scope not in caller.scopes:
        raise Problem(403, "insufficient_scope", f"This key lacks the {scope!r} scope")


async def owned_job(
    request: Request, caller: Caller, job_id: str, not_found: Callable[[str], Exception]
) -> asyncpg.Record:
    """The caller's tenant's job, or `not_found(job_id)`: another tenant's job is never revealed."""
    require_scope(caller, "jobs:read")
    row = await store.get_job(request.app.state.pool, caller.tenant_id, job_id) if len(job_id) <= 64 else None
    if row is None:
        raise not_found(job_id)
    return row
