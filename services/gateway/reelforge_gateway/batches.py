"""Batches in Postgres: accept thousands of jobs in one transaction, progress, cancel, results; templates.

A batch is accepted whole: its row, every job row (COPY) and every JobSubmitted event (COPY into
the outbox) commit together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import outbox, topics
from reelforge_gateway import store, validation
from reelforge_gateway.templates import Template, TemplateBody

_JOB_COLUMNS = ["job_id", "tenant_id", "model", "prompt", "seconds", "width", "height", "narration", "voice", "seed",
                "timeline", "created_at", "updated_at", "requested_model", "metadata", "input_reference_uri",
                "batch_id", "template", "variant", "batch_line"]


@dataclass(frozen=True)
class NewBatch:
    batch_id: str
    tenant_id: str
    kind: str  # 'upload' or 'variants'
    line_count: int


async def insert_batch(conn: asyncpg.Connection, batch: NewBatch, jobs: list[store.NewJob]) -> asyncpg.Record:
    """Inside the caller's transaction: the batch row, its jobs (made with its batch_id) and their events."""
    now = datetime.now(UTC)
    row = await conn.fetchrow(
        "INSERT INTO batches (batch_id, tenant_id, kind, line_count, job_count, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        batch.batch_id, batch.tenant_id, batch.kind, batch.line_count, len(jobs), now,
    )
    timeline = json.dumps([{"status": "queued", "at": now.isoformat()}])
    submitted_at = Timestamp()
    submitted_at.FromDatetime(now)
    records = []
    events = []
    for job in jobs:
        assert job.batch_id == batch.batch_id
        job_id = store.new_id("job")
        records.append((job_id, job.tenant_id, job.model, job.prompt, job.seconds, job.width, job.height,
                        job.narration, job.voice, job.seed, timeline, now, now, job.requested_model,
                        json.dumps(job.metadata), job.input_reference_uri, job.batch_id, job.template,
                        job.variant, job.batch_line))
        events.append((job_id, store.submitted_event(job_id, job, submitted_at)))
    await conn.copy_records_to_table("jobs", records=records, columns=_JOB_COLUMNS)
    await outbox.enqueue_many(conn, topics.JOBS_SUBMITTED, events, batch.tenant_id)
    assert row is not None
    return row


async def get_batch(pool: asyncpg.Pool | asyncpg.Connection, tenant_id: str, batch_id: str) -> asyncpg.Record | None:
    """Tenant-scoped: another tenant's batch is indistinguishable from a missing one."""
    if not validation.is_id(batch_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM batches WHERE batch_id = $1 AND tenant_id = $2", batch_id, tenant_id)
    return row


@dataclass(frozen=True)
class Progress:
    counts: dict[str, int]
    percent: int


async def progress(pool: asyncpg.Pool | asyncpg.Connection, tenant_id: str,
                   batch_ids: list[str]) -> dict[str, Progress]:
    """Counts by state and overall percent (an ended job counts as 100) for each batch, in one query."""
    rows = await pool.fetch(
        "SELECT batch_id, state, count(*) AS jobs, sum(CASE WHEN state = ANY($3::text[]) THEN 100 ELSE progress END)"
        " AS points FROM jobs WHERE tenant_id = $1 AND batch_id = ANY($2::text[]) GROUP BY batch_id, state",
        tenant_id, batch_ids, list(store.TERMINAL_STATES),
    )
    counts: dict[str, dict[str, int]] = {batch_id: {} for batch_id in batch_ids}
    points: dict[str, int] = dict.fromkeys(batch_ids, 0)
    for row in rows:
        counts[row["batch_id"]][row["state"]] = int(row["jobs"])
        points[row["batch_id"]] += int(row["points"])
    result = {}
    for batch_id, by_state in counts.items():
        total = sum(by_state.values())
        result[batch_id] = Progress(by_state, points[batch_id] // total if total else 0)
    return result


async def list_batches(pool: asyncpg.Pool, tenant_id: str, limit: int,
                       after: tuple[datetime, str] | None) -> list[asyncpg.Record]:
    """Newest first; keyset pagination on (created_at, batch_id)."""
    if after is None:
        return list(await pool.fetch(
            "SELECT * FROM batches WHERE tenant_id = $1 ORDER BY created_at DESC, batch_id DESC LIMIT $2",
            tenant_id, limit))
    return list(await pool.fetch(
        "SELECT * FROM batches WHERE tenant_id = $1 AND (created_at, batch_id) < ($3, $4)"
        " ORDER BY created_at DESC, batch_id DESC LIMIT $2",
        tenant_id, limit, after[0], after[1]))


async def cancel_batch(pool: asyncpg.Pool, tenant_id: str, batch_id: str, reason: str) -> asyncpg.Record | None:
    """Asks to cancel every job of the batch that has not ended and was not asked before (one event each).

    Jobs are locked before the batch row, the order a status update takes them in (job, then batch on
    its last job), so the two cannot deadlock.
    """
    async with pool.acquire() as conn, conn.transaction():
        now = datetime.now(UTC)
        job_ids = await conn.fetch(
            "UPDATE jobs SET cancel_requested_at = $3 WHERE tenant_id = $1 AND batch_id = $2"
            " AND cancel_requested_at IS NULL AND state NOT IN ('completed', 'failed', 'cancelled', 'expired')"
            " RETURNING job_id",
            tenant_id, batch_id, now,
        )
        batch = await conn.fetchrow(
            "UPDATE batches SET cancel_requested_at = CASE WHEN completed_at IS NULL"
            " THEN coalesce(cancel_requested_at, $3) ELSE cancel_requested_at END"
            " WHERE batch_id = $1 AND tenant_id = $2 RETURNING *",
            batch_id, tenant_id, now,
        )
        if batch is None:
            return None
        requested_at = Timestamp()
        requested_at.FromDatetime(now)
        events = [(row["job_id"], jobs_pb2.JobCancelRequested(job_id=row["job_id"], tenant_id=tenant_id,
                                                              reason=reason, requested_at=requested_at))
                  for row in job_ids]
        await outbox.enqueue_many(conn, topics.JOBS_CANCEL_REQUESTED, events, tenant_id)
    return batch


async def batch_jobs(pool: asyncpg.Pool | asyncpg.Connection, tenant_id: str, batch_id: str) -> list[asyncpg.Record]:
    """The batch's jobs in upload order (line, then variant)."""
    return list(await pool.fetch(
        "SELECT * FROM jobs WHERE tenant_id = $1 AND batch_id = $2 AND deleted_at IS NULL"
        " ORDER BY batch_line NULLS LAST, variant, job_id",
        tenant_id, batch_id))


# Templates: a tenant's own (the built-ins are in code and shadow nothing: their names are reserved).

def _template(row: asyncpg.Record) -> Template:
    return Template(name=row["name"], body=TemplateBody.model_validate_json(row["body"]), builtin=False)


async def get_template(pool: asyncpg.Pool, tenant_id: str, name: str) -> tuple[Template, asyncpg.Record] | None:
    row = await pool.fetchrow("SELECT * FROM templates WHERE tenant_id = $1 AND name = $2", tenant_id, name)
    return (_template(row), row) if row else None


async def list_templates(pool: asyncpg.Pool, tenant_id: str,
                         names: list[str] | None = None) -> list[tuple[Template, asyncpg.Record]]:
    """The tenant's own templates (only those `names`, if given), by name."""
    rows = await pool.fetch("SELECT * FROM templates WHERE tenant_id = $1 AND ($2::text[] IS NULL OR name = ANY($2))"
                            " ORDER BY name", tenant_id, names)
    return [(_template(row), row) for row in rows]


async def create_template(pool: asyncpg.Pool, tenant_id: str, name: str, body: TemplateBody,
                          max_templates: int) -> asyncpg.Record | None:
    """None if the name is taken or the tenant has `max_templates` already (the caller tells which)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE", tenant_id)  # count, then add
        if await conn.fetchval("SELECT count(*) FROM templates WHERE tenant_id = $1", tenant_id) >= max_templates:
            return None
        row: asyncpg.Record | None = await conn.fetchrow(
            "INSERT INTO templates (tenant_id, name, body) VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING"
            " RETURNING *",
            tenant_id, name, body.model_dump_json(exclude_none=True))
    return row


async def count_templates(pool: asyncpg.Pool, tenant_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM templates WHERE tenant_id = $1", tenant_id))


async def update_template(pool: asyncpg.Pool, tenant_id: str, name: str, body: TemplateBody) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        "UPDATE templates SET body = $3::jsonb, updated_at = now() WHERE tenant_id = $1 AND name = $2 RETURNING *",
        tenant_id, name, body.model_dump_json(exclude_none=True))
    return row


async def delete_template(pool: asyncpg.Pool, tenant_id: str, name: str) -> bool:
    return bool(await pool.fetchval(
        "DELETE FROM templates WHERE tenant_id = $1 AND name = $2 RETURNING true", tenant_id, name))
