"""Cross-service fixtures: one real platform (Kafka, PostgreSQL, five services) per test session."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from reelforge_local.infra import free_port
from reelforge_local.stack import Stack, Tenant

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("REELFORGE_CACHE", ROOT / ".cache"))


WEBHOOK_RECEIVER_PORT = free_port()


@pytest.fixture(scope="session")
def webhook_receiver_port() -> int:
    """The loopback port a test's webhook receiver binds: the one the test stack's gateway may call."""
    return WEBHOOK_RECEIVER_PORT


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    run_dir = CACHE / "test-stack"
    # The SSRF guard refuses loopback; only the tests' webhook receiver port is allowlisted (not all of loopback).
    os.environ.setdefault("REELFORGE_GATEWAY_WEBHOOK_ALLOWED_HOSTS", f'["127.0.0.1:{WEBHOOK_RECEIVER_PORT}"]')
    shutil.rmtree(run_dir, ignore_errors=True)
    with Stack(run_dir, CACHE, progress=lambda line: print(f"[stack] {line}", flush=True)) as platform:
        platform.start()
        yield platform


@pytest.fixture(scope="session")
def tenant(stack: Stack) -> Tenant:
    return stack.create_tenant("e2e-tenant", credit_usd="50")


@pytest.fixture
def api(stack: Stack, tenant: Tenant) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=15) as client:
        yield client


def db_fetch(stack: Stack, schema: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Reads a service's tables directly: for assertions only, never how services talk."""

    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": schema})
        try:
            return [dict(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())
