"""Shared by the billing benchmarks: a throwaway PostgreSQL with the billing schema migrated."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_postgres  # noqa: E402

from reelforge_billing.__main__ import MIGRATIONS, SCHEMA  # noqa: E402
from reelforge_core import db  # noqa: E402


@contextmanager
def postgres(name: str) -> Iterator[str]:
    """A fresh PostgreSQL server and database with the billing schema; yields its DSN, removes it all after."""
    with scratch_postgres(name) as server:
        dsn = server.new_database("bench")

        async def create() -> None:
            pool = await db.create_pool(dsn, SCHEMA, 2)
            try:
                await db.migrate(pool, SCHEMA, MIGRATIONS)
            finally:
                await pool.close()

        asyncio.run(create())
        yield dsn


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]
