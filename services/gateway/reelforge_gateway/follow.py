"""Following a job's transitions as they are stored, for streams (gRPC Watch).

The status consumer (status_consumer.py) applies jobs.v1.status to the job's row and appends each
transition to its timeline; every gateway instance shares that row, so a stream on any instance sees
every transition, whichever instance consumed the event. Reading the timeline from the last entry sent
(rather than the current state) means a poll never skips a transition that came and went between two reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from reelforge_gateway import store


def timeline(row: asyncpg.Record) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(row["timeline"])
    return entries


async def transitions(pool: asyncpg.Pool, first: asyncpg.Record,
                      interval: float) -> AsyncIterator[tuple[int, dict[str, Any], asyncpg.Record]]:
    """Yields (timeline index, entry, row read with it) for every transition after `first`, until a
    terminal state (or the job is deleted)."""
    row: asyncpg.Record | None = first
    sent = len(timeline(first))
    while row is not None and row["state"] not in store.TERMINAL_STATES:
        await asyncio.sleep(interval)
        row = await store.get_job(pool, first["tenant_id"], first["job_id"])
        if row is None:
            return
        entries = timeline(row)
        for index in range(sent, len(entries)):
            yield index, entries[index], row
        sent = len(entries)
