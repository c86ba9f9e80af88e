"""Jobs in the orchestrator's schema. A transition updates the row, appends to the timeline and
enqueues the status event, all in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import outbox, topics
from reelforge_orchestrator import job_metrics
from reelforge_orchestrator.states import JobState, check_transition


@dataclass(frozen=True)
class Job:
    job_id: str
    tenant_id: str
    spec: jobs_pb2.JobSpec
    state: JobState
    status_sequence: int
    render_attempt: int
    render_output_uri: str | None
    reserved_micros: int | None
    pool_id: str | None = None
    provider: str | None = None
    created_at: datetime | None = None
    admitted_at: datetime | None = None
    deadline: datetime | None = None
    dispatched_at: datetime | None = None
    retry_at: datetime | None = None
    avoid_pools: tuple[str, ...] = field(default=())
    trace_headers: str | None = None

    @property
    def render_id(self) -> str:
        return f"{self.job_id}/r{self.render_attempt}"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Job:
        spec = jobs_pb2.JobSpec()
        spec.ParseFromString(row["spec"])
        return cls(
            job_id=row["job_id"],
            tenant_id=row["tenant_id"],
            spec=spec,
            state=JobState(row["state"]),
            status_sequence=row["status_sequence"],
            render_attempt=row["render_attempt"],
            render_output_uri=row["render_output_uri"],
            reserved_micros=row["reserved_micros"],
            pool_id=row["pool_id"],
            provider=row["provider"],
            created_at=row["created_at"],
            admitted_at=row["admitted_at"],
            deadline=row["deadline"],
            dispatched_at=row["dispatched_at"],
            retry_at=row["retry_at"],
            avoid_pools=tuple(row["avoid_pools"] or ()),
            trace_headers=row["trace_headers"],
        )


JOB_TRANSITIONS = Counter(
    "reelforge_job_transitions_total",
    "Job state transitions by the state entered (approximate: a rolled-back transaction still counts)",
    ["state"],
)


class StaleTransition(Exception):
    """The job moved on since it was read (a duplicate or concurrent event did the work)."""


async def insert_queued(conn: asyncpg.Connection, job_id: str, tenant_id: str, spec: jobs_pb2.JobSpec) -> None:
    await conn.execute(
        "INSERT INTO jobs (job_id, tenant_id, spec, state) VALUES ($1, $2, $3, 'queued') ON CONFLICT DO NOTHING",
        job_id, tenant_id, spec.SerializeToString(),
    )


async def load(conn: asyncpg.Connection | asyncpg.Pool, job_id: str, for_update: bool = False) -> Job | None:
    query = "SELECT * FROM jobs WHERE job_id = $1" + (" FOR UPDATE" if for_update else "")  # noqa: S608
    row = await conn.fetchrow(query, job_id)
    return Job.from_row(row) if row else None


_UPDATABLE = {"render_attempt", "render_output_uri", "output_uri", "output_seconds", "reserved_micros",
              "charged_micros", "error_code", "error_message", "pool_id", "provider", "admitted_at", "deadline",
              "dispatched_at", "retry_at", "avoid_pools", "trace_headers", "thumbnail_uri", "sprite_uri"}


async def transition(conn: asyncpg.Connection, job: Job, target: JobState, **fields: Any) -> Job:
    """Moves `job` (as read) to `target`; raises StaleTransition if the row has moved since."""
    check_transition(job.state, target)
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=5))
    # Column names come from _UPDATABLE; every value is a parameter. The transition is logged in the
    # same statement (one round trip fewer on every transition, the dispatch path included).
    query = (
        "WITH moved AS (UPDATE jobs SET state = $2, status_sequence = status_sequence + 1, updated_at = now()"  # noqa: S608
        + (f", {sets}" if sets else "")
        + " WHERE job_id = $1 AND status_sequence = $3 RETURNING *, now() AS changed_at),"
        " logged AS (INSERT INTO job_transitions (job_id, sequence, state, at, error_code)"
        " SELECT job_id, status_sequence, state, changed_at, $4::text FROM moved)"
        " SELECT * FROM moved"
    )
    row = await conn.fetchrow(
        query,
        job.job_id, target.value, job.status_sequence, fields.get("error_code"), *fields.values(),
    )
    if row is None:
        raise StaleTransition(job.job_id)
    moved = Job.from_row(row)
    JOB_TRANSITIONS.labels(target.value).inc()
    job_metrics.on_transition(job, moved, target, row)
    at = Timestamp()
    at.FromDatetime(row["changed_at"])
    status = jobs_pb2.JobStatusChanged(
        job_id=moved.job_id,
        tenant_id=moved.tenant_id,
        state=target.to_proto(),
        progress_percent=target.progress_percent,
        at=at,
        sequence=moved.status_sequence,
        error_code=row["error_code"] or "",
        error_message=row["error_message"] or "",
        output_uri=row["output_uri"] or "",
        output_seconds=row["output_seconds"] or 0.0,
        cost_micros=row["charged_micros"] or 0,
        currency="USD",
        thumbnail_uri=row["thumbnail_uri"] or "",
        sprite_uri=row["sprite_uri"] or "",
    )
    await outbox.enqueue(conn, topics.JOBS_STATUS, moved.job_id, status, moved.tenant_id)
    return moved


async def update_fields(conn: asyncpg.Connection, job: Job, **fields: Any) -> Job:
    """Changes scheduling fields without a state transition (no status event); stale-checked."""
    unknown = set(fields) - _UPDATABLE
    if unknown or not fields:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=3))
    query = f"UPDATE jobs SET {sets}, updated_at = now() WHERE job_id = $1 AND status_sequence = $2 RETURNING *"  # noqa: S608
    row = await conn.fetchrow(query, job.job_id, job.status_sequence, *fields.values())
    if row is None:
        raise StaleTransition(job.job_id)
    return Job.from_row(row)


async def active_jobs(conn: asyncpg.Connection | asyncpg.Pool) -> list[Job]:
    """Every job not in a terminal state, oldest first: what a new leader rebuilds from."""
    rows = await conn.fetch(
        "SELECT * FROM jobs WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired') ORDER BY created_at"
    )
    return [Job.from_row(row) for row in rows]
