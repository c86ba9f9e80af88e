"""Webhook endpoints in the gateway's schema: tenant-scoped reads and writes, newest-first keyset pages."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from reelforge_gateway import validation
from reelforge_gateway.secret_box import SecretBox
from reelforge_gateway.store import new_id

SECRET_GRACE = timedelta(hours=24)


async def create(pool: asyncpg.Pool, box: SecretBox, tenant_id: str, name: str, url: str, events: list[str],
                 secret: str, max_endpoints: int) -> asyncpg.Record | None:
    """None when the tenant already has `max_endpoints` (counted under the tenant row's lock). The secret is
    stored sealed by `box`."""
    endpoint_id = new_id("whe")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE", tenant_id)
        count = await conn.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL", tenant_id)
        if count >= max_endpoints:
            return None
        row: asyncpg.Record | None = await conn.fetchrow(
            "INSERT INTO webhook_endpoints (endpoint_id, tenant_id, name, url, secret, events)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            endpoint_id, tenant_id, name, url, box.seal(secret, endpoint_id), events,
        )
    return row


async def get(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str) -> asyncpg.Record | None:
    if not validation.is_id(endpoint_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM webhook_endpoints WHERE endpoint_id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
        endpoint_id, tenant_id)
    return row


async def page(pool: asyncpg.Pool, tenant_id: str, limit: int,
               after: tuple[datetime, str] | None) -> list[asyncpg.Record]:
    """Newest first; `after` is the (created_at, id) of the previous page's last endpoint."""
    if after is None:
        rows = await pool.fetch(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL"
            " ORDER BY created_at DESC, endpoint_id DESC LIMIT $2", tenant_id, limit)
    else:
        rows = await pool.fetch(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL"
            " AND (created_at, endpoint_id) < ($2, $3) ORDER BY created_at DESC, endpoint_id DESC LIMIT $4",
            tenant_id, after[0], after[1], limit)
    return list(rows)


async def position(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str) -> tuple[datetime, str] | None:
    row = await get(pool, tenant_id, endpoint_id)
    return (row["created_at"], row["endpoint_id"]) if row else None


async def update(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str, name: str | None, url: str | None,
                 events: list[str] | None) -> asyncpg.Record | None:
    """Changes what is given; updated_at moves only when something actually changed."""
    if not validation.is_id(endpoint_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "UPDATE webhook_endpoints SET name = COALESCE($3, name), url = COALESCE($4, url),"
        " events = COALESCE($5, events),"
        " updated_at = CASE WHEN (COALESCE($3, name), COALESCE($4, url), COALESCE($5, events))"
        "   IS DISTINCT FROM (name, url, events) THEN now() ELSE updated_at END"
        " WHERE endpoint_id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING *",
        endpoint_id, tenant_id, name, url, events)
    return row


async def rotate_secret(pool: asyncpg.Pool, box: SecretBox, tenant_id: str, endpoint_id: str, secret: str,
                        keep_old_for_24_hours: bool) -> asyncpg.Record | None:
    """A new secret; the old one keeps signing deliveries (as a second signature) for 24 h if asked."""
    if not validation.is_id(endpoint_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "UPDATE webhook_endpoints SET previous_secret = CASE WHEN $4 THEN secret END,"
        " previous_secret_expires = CASE WHEN $4 THEN now() + $5::interval END,"
        " secret = $3, updated_at = now()"
        " WHERE endpoint_id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING *",
        endpoint_id, tenant_id, box.seal(secret, endpoint_id), keep_old_for_24_hours, SECRET_GRACE)
    return row


async def delete(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str) -> bool:
    """Soft-deletes the endpoint; its pending deliveries die with it (still listed, never sent)."""
    if not validation.is_id(endpoint_id):
        return False
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval(
            "UPDATE webhook_endpoints SET deleted_at = now() WHERE endpoint_id = $1 AND tenant_id = $2"
            " AND deleted_at IS NULL RETURNING true", endpoint_id, tenant_id)
        await conn.execute("UPDATE webhook_deliveries SET state = 'dead', last_error = 'endpoint deleted'"
                           " WHERE endpoint_id = $1 AND state = 'pending'", endpoint_id)
    return bool(deleted)
