"""Bearer API-key authentication: the caller's tenant, or a 401 problem."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from fastapi import Request

from reelforge_gateway import keys, store, tenancy
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.api.ratelimit import Decision, Limit, SharedRateLimiter
from reelforge_gateway.moderation import Moderator

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="reelforge"'}


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    expires_at: datetime | None = None
    # The key's and its tenant's own limits; None means the gateway's default setting.
    key_rate_limit: int | None = None
    tenant_rate_limit: int | None = None
    max_concurrent_jobs: int | None = None
    max_backlog_jobs: int | None = None
    tenant_status: str = "active"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Caller:
        return cls(tenant_id=row["tenant_id"], key_id=row["key_id"], scopes=frozenset(row["scopes"]),
                   expires_at=row["expires_at"], key_rate_limit=row["key_rate_limit"],
                   tenant_rate_limit=row["tenant_rate_limit"], max_concurrent_jobs=row["max_concurrent_jobs"],
                   max_backlog_jobs=row["max_backlog_jobs"], tenant_status=row["tenant_status"])


class KeyCache:
    """Keys verified in the last few seconds, by SHA-256 of the key (never the plaintext).

    Saves a database round trip per request. It is only used while `live` (the gateway listens for
    key and tenant changes, see reelforge_gateway.key_changes, and clears it on each), so a revoked key
    stops working at once on every instance; an entry never outlives the key's expiry.
    """

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, tuple[float, Caller]] = {}
        self.live = False

    def get(self, token: str) -> Caller | None:
        if self._ttl <= 0 or not self.live:
            return None
        entry = self._entries.get(keys.digest(token))
        if entry is None or entry[0] < time.monotonic():
            return None
        if entry[1].expires_at is not None and entry[1].expires_at <= datetime.now(UTC):
            return None
        return entry[1]

    def put(self, token: str, caller: Caller) -> None:
        if self._ttl <= 0 or not self.live:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[keys.digest(token)] = (time.monotonic() + self._ttl, caller)

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True)
class Limits:
    """The gateway's defaults for keys and tenants without limits of their own (0 = no limit)."""

    key_rate_limit: int = 0
    tenant_rate_limit: int = 0
    max_concurrent_jobs: int = 0
    max_backlog_jobs: int = 0


class Gatekeeper:
    """Who is calling and whether they may: shared by the REST and gRPC edges.

    Raises `Problem`s (401, 403, 429); each edge renders them its own way."""

    def __init__(self, pool: asyncpg.Pool, cache: KeyCache, limiter: SharedRateLimiter, defaults: Limits) -> None:
        self.pool, self.cache, self.limiter, self.defaults = pool, cache, limiter, defaults

    async def caller(self, authorization: str) -> Caller:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "missing_api_key", "An API key is required",
                          "Send it as 'Authorization: Bearer <key>'", headers=_CHALLENGE)
        token = token.strip()
        caller = self.cache.get(token)
        if caller is None:
            prefix = keys.prefix_of(token)
            row = await store.find_active_key(self.pool, prefix) if prefix else None
            if row is None or not keys.matches(token, row["key_hash"]):
                raise Problem(401, "invalid_api_key", "The API key is not valid", headers=_CHALLENGE)
            caller = Caller.from_row(row)
            self.cache.put(token, caller)
        if caller.tenant_status != "active":
            raise Problem(403, "tenant_suspended", "This tenant is suspended", "Ask the platform operator")
        return caller

    def limits(self, caller: Caller) -> list[Limit]:
        key_rpm = caller.key_rate_limit if caller.key_rate_limit is not None else self.defaults.key_rate_limit
        tenant_rpm = (caller.tenant_rate_limit if caller.tenant_rate_limit is not None
                      else self.defaults.tenant_rate_limit)
        return [Limit(f"key:{caller.key_id}", key_rpm, "rate_limited"),
                Limit(f"tenant:{caller.tenant_id}", tenant_rpm, "tenant_rate_limited")]

    async def admit(self, caller: Caller) -> Decision | None:
        """Takes one request from the key's and the tenant's per-minute budgets, or raises 429."""
        taken = await self.limiter.take(self.limits(caller))
        if taken is None:
            return None
        decision, limit = taken
        if not decision.allowed:
            whose = "tenant" if limit.code == "tenant_rate_limited" else "key"
            raise Problem(429, limit.code, "Too many requests",
                          f"This {whose} may make {decision.limit} requests per minute; retry after"
                          f" {decision.retry_after} s", headers=decision.headers())
        return decision

    def job_slots(self, caller: Caller) -> tuple[int, int]:
        """(max unfinished jobs, max queued jobs) for the caller's tenant; 0 = no limit."""
        concurrent = (caller.max_concurrent_jobs if caller.max_concurrent_jobs is not None
                      else self.defaults.max_concurrent_jobs)
        backlog = caller.max_backlog_jobs if caller.max_backlog_jobs is not None else self.defaults.max_backlog_jobs
        return concurrent, backlog

    def job_admission(self, caller: Caller) -> Callable[[asyncpg.Connection], Awaitable[None]] | None:
        """The check `store.submit_job` runs before inserting a job: the tenant's concurrent jobs (accepted
        and not yet terminal) and backlog (queued, not yet admitted) must be under their limits.
        Without a lock, concurrent submissions may overshoot by at most their number."""
        concurrent, backlog = self.job_slots(caller)
        if not concurrent and not backlog:
            return None

        async def admit(conn: asyncpg.Connection) -> None:
            unfinished, queued = await tenancy.job_counts(conn, caller.tenant_id, concurrent, backlog)
            if concurrent and unfinished >= concurrent:
                raise _slots_problem("concurrency_limit_exceeded", concurrent,
                                     f"The tenant has {concurrent} unfinished jobs, its limit")
            if backlog and queued >= backlog:
                raise _slots_problem("backlog_full", backlog, f"The tenant has {backlog} queued jobs, its limit")

        return admit


JOB_SLOT_RETRY_SECONDS = 5


def _slots_problem(code: str, limit: int, detail: str) -> Problem:
    headers = {"Retry-After": str(JOB_SLOT_RETRY_SECONDS), "RateLimit-Limit": str(limit),
               "RateLimit-Remaining": "0", "RateLimit-Reset": str(JOB_SLOT_RETRY_SECONDS)}
    return Problem(429, code, "Too many unfinished jobs", f"{detail}; retry when some have finished",
                   headers=headers)


def required_scope(method: str, path: str) -> str:
    """The scope a request needs: `admin` under /v1/admin, else `jobs:read` to read, `jobs:write` to change.
    Enforced for every authenticated route, including ones added later."""
    if path == "/v1/admin" or path.startswith("/v1/admin/"):
        return "admin"
    return "jobs:read" if method in ("GET", "HEAD", "OPTIONS") else "jobs:write"


async def authenticate(request: Request) -> Caller:
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    caller = await gatekeeper.caller(request.headers.get("authorization", ""))
    require_scope(caller, required_scope(request.method, request.url.path))
    decision = await gatekeeper.admit(caller)
    if decision is not None:
        request.state.rate_limit = decision
    return caller


def moderate(request: Request, prompt: str, narration: str | None = None) -> None:
    """The moderation hook: 422 `prompt_blocked` before anything is stored."""
    moderate_text(request.app.state.moderator, prompt, narration)


def moderate_text(moderator: Moderator, prompt: str, narration: str | None = None) -> None:
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
