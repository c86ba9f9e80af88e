"""Shared by the benchmarks: a throwaway PostgreSQL server on a fresh data directory under the cache."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelforge_local.infra import PostgresServer  # noqa: E402
from tests.conftest import CACHE  # noqa: E402


@contextmanager
def scratch_postgres(name: str) -> Iterator[PostgresServer]:
    """A PostgreSQL server in `.cache/bench-<name>` (emptied first), stopped and removed afterwards."""
    data = CACHE / f"bench-{name}"
    shutil.rmtree(data, ignore_errors=True)
    server = PostgresServer.start(data / "postgres")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
