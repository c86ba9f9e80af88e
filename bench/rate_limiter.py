"""The shared rate limiter on its own, on a real PostgreSQL: what a check costs, how many database
statements it takes, and that instances sharing a bucket stay within its limit. Prints:

  - checks/s and statements per check for one instance under a high limit (never refusing)
  - for 3 instances sharing one bucket: allowed vs the limit, with leases of ~2%

    ./run bench bench/rate_limiter.py [--checks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch import scratch_postgres  # noqa: E402

from reelforge_core import db  # noqa: E402
from reelforge_gateway.__main__ import MIGRATIONS, SCHEMA  # noqa: E402
from reelforge_gateway.api.ratelimit import Limit, SharedRateLimiter  # noqa: E402


async def run(dsn: str, checks: int) -> None:
    pool = await db.create_pool(dsn, SCHEMA, 4)
    await db.migrate(pool, SCHEMA, MIGRATIONS)
    issued = 0

    class Counting:
        """The pool, counting the statements the limiter sends."""

        async def fetch(self, *args: Any) -> Any:
            nonlocal issued
            issued += 1
            return await pool.fetch(*args)

    counting: Any = Counting()
    limiter = SharedRateLimiter(counting)
    limits = [Limit("key:bench", 100_000_000), Limit("tenant:bench", 100_000_000)]
    began = time.perf_counter()
    for _ in range(checks):
        await limiter.take(limits)
    elapsed = time.perf_counter() - began
    print(f"one instance, key + tenant buckets, never refusing: {checks / elapsed:,.0f} checks/s,"
          f" {issued} statements for {checks} checks ({issued / checks:.3f} per check)")

    limit = 6000
    instances = [SharedRateLimiter(counting) for _ in range(3)]
    allowed = 0
    issued = 0
    began = time.perf_counter()
    for i in range(limit * 2):
        taken = await instances[i % 3].take([Limit("key:shared", limit)])
        assert taken is not None
        allowed += taken[0].allowed
    elapsed = time.perf_counter() - began
    lease = instances[0].lease_size(limit)
    print(f"3 instances, one bucket of {limit}/min, {limit * 2} checks in {elapsed:.1f} s: {allowed} allowed"
          f" (limit {limit} + refill {limit * elapsed / 60:.0f}; leases of {lease}), {issued} statements")
    await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=20000)
    args = parser.parse_args()
    with scratch_postgres("ratelimit") as postgres:
        asyncio.run(run(postgres.dsn, args.checks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
