"""The adapter's durable in-flight set (table `renders`) and its result outbox writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from reelforge.jobs.v1 import jobs_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import outbox, topics

CONSUMER = "render-adapter"


@dataclass(slots=True, eq=False)
class InFlight:
    """One render the tracker drives; a few hundred bytes, so thousands fit easily."""

    render_id: str
    job_id: str
    tenant_id: str
    provider: str
    spec: jobs_pb2.JobSpec
    deadline: float  # wall-clock seconds since the epoch
    external_id: str = ""
    trace_headers: dict[str, str] = field(default_factory=dict)
    cancel_requested: bool = False
    submit_pending: bool = False  # a submit went out and its answer is not recorded (see set_submit_pending)
    progress: int = 0
    polls: int = 0
    errors: int = 0  # consecutive transient errors (backoff grows with them)
    pushed: Any = None  # a verified provider webhook body not read yet (read in place of the next poll)
    due: float = 0.0  # monotonic time of the next step
    accepted_at: float = 0.0  # wall-clock seconds since the epoch (a resumed render keeps its start)


def _in_flight(row: asyncpg.Record) -> InFlight:
    spec = jobs_pb2.JobSpec()
    spec.ParseFromString(row["spec"])
    deadline: datetime = row["deadline_at"]
    return InFlight(
        render_id=row["render_id"], job_id=row["job_id"], tenant_id=row["tenant_id"], provider=row["provider"],
        spec=spec, deadline=deadline.timestamp(), external_id=row["external_id"] or "",
        trace_headers=json.loads(row["trace_headers"]), cancel_requested=row["cancel_requested"],
        submit_pending=row["submit_pending"], accepted_at=row["accepted_at"].timestamp(),
    )


async def accept(conn: asyncpg.Connection, request: render_pb2.RenderRequested, timeout_seconds: float,
                 trace_headers: dict[str, str]) -> InFlight | None:
    """Records the request; None if this render id was accepted before (a redelivery)."""
    row = await conn.fetchrow(
        "INSERT INTO renders (render_id, job_id, tenant_id, provider, spec, trace_headers, deadline_at,"
        " cancel_requested)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, now() + make_interval(secs => $7),"
        "         EXISTS (SELECT 1 FROM early_cancels WHERE render_id = $1))"
        " ON CONFLICT (render_id) DO NOTHING RETURNING *",
        request.render_id, request.job_id, request.tenant_id, request.provider, request.spec.SerializeToString(),
        json.dumps(trace_headers), timeout_seconds,
    )
    return _in_flight(row) if row else None


async def load_in_flight(pool: asyncpg.Pool) -> list[InFlight]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM renders WHERE state <> 'finished' ORDER BY accepted_at")
    return [_in_flight(row) for row in rows]


async def set_submit_pending(pool: asyncpg.Pool, render_id: str, pending: bool) -> None:
    """The submission record: written before a non-idempotent submit, cleared once the provider answered."""
    async with pool.acquire() as conn:
        await conn.execute("UPDATE renders SET submit_pending = $2 WHERE render_id = $1 AND state = 'accepted'",
                           render_id, pending)


async def mark_submitted(pool: asyncpg.Pool, render_id: str, external_id: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE renders SET external_id = $2, state = 'submitted', submitted_at = now(), submit_pending = false"
            " WHERE render_id = $1 AND state = 'accepted'",
            render_id, external_id,
        )


async def request_cancel(conn: asyncpg.Connection, render_id: str) -> bool:
    """Flags an unfinished render for cancellation; remembers cancels for renders not seen yet.
    True if a render in flight was flagged."""
    status = await conn.fetchval(
        "UPDATE renders SET cancel_requested = true WHERE render_id = $1 RETURNING state", render_id
    )
    if status is None:
        await conn.execute("INSERT INTO early_cancels (render_id) VALUES ($1) ON CONFLICT DO NOTHING", render_id)
        return False
    return bool(status != "finished")


async def finish(pool: asyncpg.Pool, job: InFlight, result: render_pb2.RenderResult) -> None:
    """Ends the render and reports its result, exactly once, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE renders SET state = 'finished', finished_at = now(), error_code = NULLIF($2, '')"
            " WHERE render_id = $1",
            job.render_id, result.error_code,
        )
        if await outbox.mark_processed(conn, CONSUMER, job.render_id):
            await outbox.enqueue(conn, topics.RENDER_RESULT, job.job_id, result, job.tenant_id)
