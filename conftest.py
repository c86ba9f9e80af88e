"""Fixtures every test folder may use: a real PostgreSQL server for integration tests that need
only a database (services' own tests), started once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelforge_local.infra import PostgresServer  # first import: also turns gRPC's fork handlers off

ROOT = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("REELFORGE_CACHE", ROOT / ".cache"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    data = CACHE / "test-postgres"
    shutil.rmtree(data, ignore_errors=True)
    server = PostgresServer.start(data)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The server's DSN; each test gets a database of its own, so schemas never collide."""
    return postgres_server.new_database("t")
