"""Tenants and their API keys as the admin API manages them, and the tenant's job counts for limits.

Every change that can affect a verified key (revocation, rotation, a tenant's status or limits) sends
a NOTIFY on KEY_CHANGES in its transaction, so every gateway instance drops its key cache at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from reelforge_gateway import keys, validation
from reelforge_gateway.store import new_id

log = logging.getLogger(__name__)

KEY_CHANGES = "gateway_key_changes"
UNFINISHED_STATES = ["queued", "admitted", "rendering", "postprocessing"]
# Tenant columns the admin API may change.
TENANT_FIELDS = ("name", "status", "rate_limit_per_minute", "max_concurrent_jobs", "max_backlog_jobs")


class NameTaken(Exception):
    """Another tenant already has this name."""


class KeyNotActive(Exception):
    """The key is revoked or expired, so it cannot be rotated."""


async def _notify(conn: asyncpg.Connection, what: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", KEY_CHANGES, what)


async def create_tenant(pool: asyncpg.Pool, name: str, settings: dict[str, Any]) -> asyncpg.Record:
    fields = {k: v for k, v in settings.items() if k in TENANT_FIELDS and k != "name"}
    columns = ["tenant_id", "name", *fields]
    values = [new_id("ten"), name, *fields.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    try:
        row: asyncpg.Record = await pool.fetchrow(
            f"INSERT INTO tenants ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *",  # noqa: S608 (fixed names)
            *values)
    except asyncpg.UniqueViolationError:
        raise NameTaken(name) from None
    return row


async def get_tenant(pool: asyncpg.Pool, tenant_id: str) -> asyncpg.Record | None:
    if not validation.is_id(tenant_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow("SELECT * FROM tenants WHERE tenant_id = $1", tenant_id)
    return row


async def list_tenants(pool: asyncpg.Pool, limit: int, after: str | None) -> list[asyncpg.Record]:
    """Oldest first, keyset-paginated on (created_at, tenant_id); `after` is the last tenant id seen."""
    if after is None:
        return list(await pool.fetch("SELECT * FROM tenants ORDER BY created_at, tenant_id LIMIT $1", limit))
    return list(await pool.fetch(
        "SELECT t.* FROM tenants t, tenants a WHERE a.tenant_id = $1 AND (t.created_at, t.tenant_id) >"
        " (a.created_at, a.tenant_id) ORDER BY t.created_at, t.tenant_id LIMIT $2", after, limit))


async def update_tenant(pool: asyncpg.Pool, tenant_id: str, changes: dict[str, Any]) -> asyncpg.Record | None:
    fields = {k: v for k, v in changes.items() if k in TENANT_FIELDS}
    if not validation.is_id(tenant_id):
        return None
    if not fields:
        return await get_tenant(pool, tenant_id)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
    async with pool.acquire() as conn, conn.transaction():
        try:
            row: asyncpg.Record | None = await conn.fetchrow(
                f"UPDATE tenants SET {sets}, updated_at = now() WHERE tenant_id = $1 RETURNING *",  # noqa: S608
                tenant_id, *fields.values())
        except asyncpg.UniqueViolationError:
            raise NameTaken(str(fields.get("name"))) from None
        if row is not None:
            await _notify(conn, f"tenant:{tenant_id}")
    return row


async def create_key(
    pool: asyncpg.Pool, tenant_id: str, scopes: Iterable[str], name: str | None = None,
    expires_at: datetime | None = None, rate_limit_per_minute: int | None = None,
) -> tuple[asyncpg.Record, keys.NewKey] | None:
    """A new key for the tenant (None if there is no such tenant); the plaintext is only in the NewKey."""
    if not validation.is_id(tenant_id):
        return None
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT true FROM tenants WHERE tenant_id = $1", tenant_id):
            return None
        return await _insert_key(conn, tenant_id, sorted(set(scopes)), name, expires_at, rate_limit_per_minute,
                                 None)


async def _insert_key(conn: asyncpg.Connection, tenant_id: str, scopes: list[str], name: str | None,
                      expires_at: datetime | None, rate_limit: int | None,
                      rotated_from: str | None) -> tuple[asyncpg.Record, keys.NewKey]:
    key = keys.generate()
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO api_keys (key_id, tenant_id, prefix, key_hash, scopes, name, expires_at, rate_limit_per_minute,"
        " rotated_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
        new_id("key"), tenant_id, key.prefix, key.digest, scopes, name, expires_at, rate_limit, rotated_from)
    return row, key


async def list_keys(pool: asyncpg.Pool, tenant_id: str) -> list[asyncpg.Record]:
    return list(await pool.fetch(
        "SELECT * FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, key_id", tenant_id))


async def rotate_key(
    pool: asyncpg.Pool, key_id: str, grace: timedelta, expires_at: datetime | None,
) -> tuple[asyncpg.Record, asyncpg.Record, keys.NewKey] | None:
    """Issues a successor with the same tenant, scopes, name and limit; the old key keeps working for
    `grace` (or until its own expiry, if sooner). Returns (old, new, new key) or None if no such key."""
    if not validation.is_id(key_id):
        return None
    async with pool.acquire() as conn, conn.transaction():
        old = await conn.fetchrow("SELECT * FROM api_keys WHERE key_id = $1 FOR UPDATE", key_id)
        if old is None:
            return None
        now = datetime.now(UTC)
        if old["revoked_at"] is not None or (old["expires_at"] is not None and old["expires_at"] <= now):
            raise KeyNotActive(key_id)
        new, key = await _insert_key(conn, old["tenant_id"], list(old["scopes"]), old["name"], expires_at,
                                     old["rate_limit_per_minute"], key_id)
        old = await conn.fetchrow(
            "UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'), $2) WHERE key_id = $1"
            " RETURNING *", key_id, now + grace)
        await _notify(conn, f"key:{key_id}")
    return old, new, key


async def revoke_key(pool: asyncpg.Pool, key_id: str) -> asyncpg.Record | None:
    """Revokes at once (idempotent: a revoked key keeps its first revocation time)."""
    if not validation.is_id(key_id):
        return None
    async with pool.acquire() as conn, conn.transaction():
        row: asyncpg.Record | None = await conn.fetchrow(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1 RETURNING *", key_id)
        if row is not None:
            await _notify(conn, f"key:{key_id}")
    return row


async def job_counts(conn: asyncpg.Connection, tenant_id: str, max_unfinished: int,
                     max_queued: int) -> tuple[int, int]:
    """The tenant's unfinished and queued jobs, each counted only up to its limit (an index range scan
    that stops there, so a large backlog costs no more than the limit)."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE tenant_id = $1 AND state = ANY($2::text[])"
        "  LIMIT $3) u) AS unfinished,"
        " (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE tenant_id = $1 AND state = 'queued' LIMIT $4) q) AS queued",
        tenant_id, UNFINISHED_STATES, max_unfinished, max_queued)
    assert row is not None
    return int(row["unfinished"]), int(row["queued"])


async def bootstrap_admin_key(pool: asyncpg.Pool, tenant_name: str) -> tuple[str, str, keys.NewKey]:
    async with pool.acquire() as conn, conn.transaction():
        tenant_id = await conn.fetchval(
            "INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING tenant_id", new_id("ten"), tenant_name)
        row, key = await _insert_key(conn, tenant_id, ["admin"], "bootstrap admin key", None, None, None)
    return tenant_id, row["key_id"], key


async def forget_idle_rate_buckets(pool: asyncpg.Pool, idle_seconds: float = 600, every_seconds: float = 300) -> None:
    """Deletes buckets nobody used for a while (they would be full again anyway)."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await pool.execute("DELETE FROM rate_buckets WHERE updated_at < now() - make_interval(secs => $1)",
                               idle_seconds)
        except Exception as exc:  # housekeeping: never worth stopping the service for
            log.warning("rate bucket expiry failed; will retry", extra={"error": f"{type(exc).__name__}: {exc}"})
