"""PostgreSQL access: one asyncpg pool per service, pinned to the service's own schema, and migrations.

Migrations are plain SQL files named `NNNN_description.sql`. The core's own (outbox, inbox) are
applied first into every service schema, then the service's. Each file runs once, in its own
transaction, under an advisory lock so that two instances starting together do not race.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _check_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def create_pool(dsn: str, schema: str, size: int = 10) -> asyncpg.Pool:
    _check_schema(schema)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        server_settings={"search_path": schema, "application_name": f"reelforge-{schema}"},
        command_timeout=30,
    )
    assert pool is not None
    return pool


def core_migrations_dir() -> Path:
    return Path(str(resources.files("reelforge_core") / "migrations"))


def _migration_files(directory: Path, prefix: str) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        if not _MIGRATION_NAME.match(path.name):
            raise ValueError(f"migration file {path} must be named NNNN_description.sql")
        found.append((f"{prefix}{path.stem}", path))
    return found


async def migrate(pool: asyncpg.Pool, schema: str, service_migrations: Path) -> list[str]:
    """Brings `schema` up to date; returns the versions applied now."""
    _check_schema(schema)
    plan = _migration_files(core_migrations_dir(), "core/") + _migration_files(service_migrations, "")
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")  # noqa: S608 (checked name)
            done = {r["version"] for r in rows}
            for version, path in plan:
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {schema}")
                    await conn.execute(path.read_text())
                    await conn.execute(
                        f"INSERT INTO {schema}.schema_migrations (version) VALUES ($1)",  # noqa: S608 (checked name)
                        version,
                    )
                applied_now.append(version)
                log.info("migration applied", extra={"schema": schema, "version": version})
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{schema}")
    return applied_now


async def ping(pool: asyncpg.Pool) -> bool:
    try:
        async with pool.acquire(timeout=2) as conn:
            value: Any = await conn.fetchval("SELECT 1")
            return bool(value == 1)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


async def expire_forever(what: str, expire: Callable[[], Awaitable[int]], every_seconds: float = 600.0) -> None:
    """Runs `expire` (which deletes old rows and returns how many) every `every_seconds`, for ever; a
    database failure is logged and tried again next time, never the end of the service."""
    while True:
        try:
            expired = await expire()
            if expired:
                log.info(f"{what} expired", extra={"count": expired})
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning(f"{what} expiry failed; will retry", extra={"error": str(exc)})
        await asyncio.sleep(every_seconds)
