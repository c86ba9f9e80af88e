"""Following a job's transitions as they are stored, for streams (gRPC Watch).

The status consumer (status_consumer.py) applies jobs.v1.status to the job's row and appends each
transition to its timeline; every gateway instance shares that row, so a stream on any instance sees
every transition, whichever instance consumed the event. The commit notifies `CHANNEL` with the job id
(migration 0050); one listening connection per process (reelforge_core.listen) wakes the streams that
follow that job. A wake-up, or `fallback_seconds` without one (a notification lost to a reconnect), makes
the stream re-read the timeline from the last entry sent, so no transition is skipped or sent twice.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import asyncpg

from reelforge_core.listen import Listener
from reelforge_gateway import store

CHANNEL = "job_transitions_gateway"  # job_transitions_<schema>, the gateway's schema


def timeline(row: asyncpg.Record) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(row["timeline"])
    return entries


async def transitions(pool: asyncpg.Pool, feed: Listener, first: asyncpg.Record,
                      fallback_seconds: float) -> AsyncGenerator[tuple[int, dict[str, Any], asyncpg.Record], None]:
    """Yields (timeline index, entry, row read with it) for every transition after `first`, until a
    terminal state (or the job is deleted)."""
    row: asyncpg.Record | None = first
    sent = len(timeline(first))
    with feed.subscribe(CHANNEL, first["job_id"]) as woken:
        caught_up = False  # a transition committed between reading `first` and subscribing notified no one
        while row is not None and row["state"] not in store.TERMINAL_STATES:
            if caught_up:
                await woken.wait(fallback_seconds)
            caught_up = True
            row = await store.get_job(pool, first["tenant_id"], first["job_id"])
            if row is None:
                return
            entries = timeline(row)
            for index in range(sent, len(entries)):
                yield index, entries[index], row
            sent = len(entries)
