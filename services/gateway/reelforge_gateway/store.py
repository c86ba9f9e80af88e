"""The gateway's tables: tenants, keys, and the partner-facing view of jobs."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import outbox, topics
from reelforge_gateway import batch_completion, keys, validation, webhooks


@dataclass(frozen=True)
class NewJob:
    tenant_id: str
    model: str
    prompt: str
    seconds: float
    width: int
    height: int
    narration: str | None
    voice: str
    seed: int
    requested_model: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    input_reference_uri: str | None = None
    batch_id: str | None = None
    template: str | None = None
    variant: int = 0
    batch_line: int | None = None  # the line of a batch upload the job came from (1-based)
    postprocess_options: bytes = b""  # serialized reelforge.postprocess.v1.PostprocessOptions
    source_job_id: str | None = None  # remix / edit / extension of this job
    source_operation: str | None = None


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key and the fingerprint of the request that first used it."""

    key: str
    request_hash: str


@dataclass(frozen=True)
class Submitted:
    status_code: int
    body: dict[str, Any]
    replayed: bool


class IdempotencyKeyReused(Exception):
    """The key was first used with a different request."""


class _Duplicate(Exception):
    """Rolls back a transaction that lost the race for an idempotency key."""


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(12)}"


async def create_tenant(pool: asyncpg.Pool, name: str) -> tuple[str, keys.NewKey]:
    key = keys.generate()
    async with pool.acquire() as conn, conn.transaction():
        tenant_id = await conn.fetchval("SELECT tenant_id FROM tenants WHERE name = $1", name)
        if tenant_id is None:
            tenant_id = new_id("ten")
            await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)", tenant_id, name)
        await conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, prefix, key_hash) VALUES ($1, $2, $3, $4)",
            new_id("key"), tenant_id, key.prefix, key.digest,
        )
    return tenant_id, key


async def find_active_key(pool: asyncpg.Pool, prefix: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT k.key_id, k.tenant_id, k.key_hash, k.scopes, k.expires_at, k.rate_limit_per_minute AS key_rate_limit,"
        " t.rate_limit_per_minute AS tenant_rate_limit, t.max_concurrent_jobs, t.max_backlog_jobs,"
        " t.status AS tenant_status FROM api_keys k JOIN tenants t ON t.tenant_id = k.tenant_id"
        " WHERE k.prefix = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())",
        prefix,
    )
    return row


async def insert_job(pool: asyncpg.Pool, job: NewJob) -> asyncpg.Record:
    """Stores the job and its JobSubmitted event in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        return await _insert_job(conn, job)


async def submit_job(
    pool: asyncpg.Pool,
    job: NewJob,
    render: Callable[[asyncpg.Record], dict[str, Any]],
    status_code: int,
    idempotency: Idempotency | None,
    admit: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> Submitted:
    """Stores the job, its event and (with a key) the answer, all in one transaction.

    With an Idempotency-Key, concurrent duplicates race on the key's primary key: the first insert
    wins; the others block on the index until it commits, roll their own job back and return the
    stored answer. A key first used with a different request raises IdempotencyKeyReused.
    `admit` (e.g. the tenant's job limits) runs in the transaction before the insert; a replay skips it.
    """

    async def write(conn: asyncpg.Connection) -> tuple[dict[str, Any], str]:
        if admit is not None:
            await admit(conn)
        row = await _insert_job(conn, job)
        return render(row), row["job_id"]

    return await idempotent_write(pool, job.tenant_id, idempotency, status_code, write)


async def idempotent_write(
    pool: asyncpg.Pool,
    tenant_id: str,
    idempotency: Idempotency | None,
    status_code: int,
    write: Callable[[asyncpg.Connection], Awaitable[tuple[dict[str, Any], str | None]]],
) -> Submitted:
    """Runs `write` (which returns the answer and the job id it made, if one) in a transaction that,
    with a key, also stores the answer: see submit_job for the race between duplicates."""
    async with pool.acquire() as conn:
        if idempotency is not None:
            stored = await _stored_answer(conn, tenant_id, idempotency)
            if stored is not None:
                return stored
        try:
            async with conn.transaction():
                body, job_id = await write(conn)
                if idempotency is not None:
                    claimed = await conn.fetchval(
                        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response, job_id)"
                        " VALUES ($1, $2, $3, $4, $5::json, $6) ON CONFLICT DO NOTHING RETURNING true",
                        tenant_id, idempotency.key, idempotency.request_hash, status_code, json.dumps(body),
                        job_id,
                    )
                    if not claimed:
                        raise _Duplicate
                return Submitted(status_code, body, replayed=False)
        except _Duplicate:
            assert idempotency is not None
            stored = await _stored_answer(conn, tenant_id, idempotency)
            if stored is None:  # the winner's key expired in between: vanishingly rare, still answer
                raise IdempotencyKeyReused from None
            return stored


async def _stored_answer(conn: asyncpg.Connection, tenant_id: str, idempotency: Idempotency) -> Submitted | None:
    row = await conn.fetchrow(
        "SELECT request_hash, status_code, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
        tenant_id, idempotency.key,
    )
    if row is None:
        return None
    if row["request_hash"] != idempotency.request_hash:
        raise IdempotencyKeyReused
    return Submitted(row["status_code"], json.loads(row["response"]), replayed=True)


async def forget_idempotency_keys(pool: asyncpg.Pool, older_than_hours: float) -> int:
    deleted = await pool.fetchval(
        "WITH gone AS (DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)"
        " RETURNING 1) SELECT count(*) FROM gone",
        older_than_hours * 3600,
    )
    return int(deleted or 0)


async def _insert_job(conn: asyncpg.Connection, job: NewJob) -> asyncpg.Record:
    job_id = new_id("job")
    now = datetime.now(UTC)
    timeline = [{"status": "queued", "at": now.isoformat()}]
    row = await conn.fetchrow(
        "INSERT INTO jobs (job_id, tenant_id, model, prompt, seconds, width, height, narration, voice, seed,"
        " timeline, created_at, updated_at, requested_model, metadata, input_reference_uri, batch_id,"
        " template, variant, batch_line)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $12, $13, $14::jsonb, $15, $16,"
        " $17, $18, $19) RETURNING *",
        job_id, job.tenant_id, job.model, job.prompt, job.seconds, job.width, job.height, job.narration,
        job.voice, job.seed, json.dumps(timeline), now, job.requested_model, json.dumps(job.metadata),
        job.input_reference_uri, job.batch_id, job.template, job.variant, job.batch_line,
    )
    if job.source_job_id:
        row = await conn.fetchrow("UPDATE jobs SET source_job_id = $2, source_operation = $3 WHERE job_id = $1"
                                  " RETURNING *", job_id, job.source_job_id, job.source_operation)
    await outbox.enqueue(conn, topics.JOBS_SUBMITTED, job_id, submitted_event(job_id, job, now), job.tenant_id)
    assert row is not None
    return row


def submitted_event(job_id: str, job: NewJob, at: datetime | Timestamp) -> jobs_pb2.JobSubmitted:
    if isinstance(at, Timestamp):
        submitted_at = at
    else:
        submitted_at = Timestamp()
        submitted_at.FromDatetime(at)
    return jobs_pb2.JobSubmitted(
        job_id=job_id,
        tenant_id=job.tenant_id,
        submitted_at=submitted_at,
        spec=jobs_pb2.JobSpec(
            prompt=job.prompt, seconds=job.seconds, width=job.width, height=job.height,
            narration=job.narration or "", model=job.model, seed=job.seed, voice=job.voice,
            metadata=job.metadata, input_reference_uri=job.input_reference_uri or "", batch_id=job.batch_id or "",
            template=job.template or "", variant=job.variant,
            postprocess_options=job.postprocess_options, source_job_id=job.source_job_id or "",
            source_operation=job.source_operation or "",
        ),
    )


async def get_job(pool: asyncpg.Pool, tenant_id: str, job_id: str) -> asyncpg.Record | None:
    """Tenant-scoped: another tenant's job is indistinguishable from a missing one."""
    if not validation.is_id(job_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM jobs WHERE job_id = $1 AND tenant_id = $2 AND deleted_at IS NULL", job_id, tenant_id
    )
    return row


async def delete_job(pool: asyncpg.Pool, tenant_id: str, job_id: str) -> bool:
    """Hides the job from every read (the OpenAI DELETE); its event history stays for billing and audit."""
    if not validation.is_id(job_id):
        return False
    deleted = await pool.fetchval(
        "UPDATE jobs SET deleted_at = now() WHERE job_id = $1 AND tenant_id = $2 AND deleted_at IS NULL"
        " RETURNING true",
        job_id, tenant_id,
    )
    return bool(deleted)


@dataclass(frozen=True)
class JobFilter:
    status: list[str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] | None = None
    batch_id: str | None = None


async def list_jobs(
    pool: asyncpg.Pool, tenant_id: str, limit: int, descending: bool = True,
    after: tuple[datetime, str] | None = None, where: JobFilter | None = None,
) -> list[asyncpg.Record]:
    """Keyset pagination on (created_at, job_id): stable under inserts, one index range scan."""
    where = where or JobFilter()
    clauses = ["tenant_id = $1", "deleted_at IS NULL"]
    args: list[Any] = [tenant_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if after is not None:
        op = "<" if descending else ">"
        clauses.append(f"(created_at, job_id) {op} ({arg(after[0])}, {arg(after[1])})")
    if where.status:
        clauses.append(f"state = ANY({arg(where.status)}::text[])")
    if where.created_after is not None:
        clauses.append(f"created_at >= {arg(where.created_after)}")
    if where.created_before is not None:
        clauses.append(f"created_at < {arg(where.created_before)}")
    if where.metadata:
        clauses.append(f"metadata @> {arg(json.dumps(where.metadata))}::jsonb")
    if where.batch_id is not None:
        clauses.append(f"batch_id = {arg(where.batch_id)}")
    order = "DESC" if descending else "ASC"
    sql = (f"SELECT * FROM jobs WHERE {' AND '.join(clauses)}"  # noqa: S608 (clauses are fixed text)
           f" ORDER BY created_at {order}, job_id {order} LIMIT {arg(limit)}")
    return list(await pool.fetch(sql, *args))


async def job_position(pool: asyncpg.Pool, tenant_id: str, job_id: str) -> tuple[datetime, str] | None:
    """The keyset position of a job, for `after=<job id>` cursors."""
    if not validation.is_id(job_id):
        return None
    row = await pool.fetchrow(
        "SELECT created_at, job_id FROM jobs WHERE job_id = $1 AND tenant_id = $2", job_id, tenant_id
    )
    return (row["created_at"], row["job_id"]) if row else None


async def request_cancel(pool: asyncpg.Pool, tenant_id: str, job_id: str, reason: str) -> asyncpg.Record | None:
    """Records the request and writes JobCancelRequested through the outbox, once per job."""
    if not validation.is_id(job_id):
        return None
    async with pool.acquire() as conn, conn.transaction():
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT * FROM jobs WHERE job_id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR UPDATE",
            job_id, tenant_id,
        )
        if row is None or row["cancel_requested_at"] is not None or row["state"] in TERMINAL_STATES:
            return row
        now = datetime.now(UTC)
        row = await conn.fetchrow(
            "UPDATE jobs SET cancel_requested_at = $2 WHERE job_id = $1 RETURNING *", job_id, now
        )
        requested_at = Timestamp()
        requested_at.FromDatetime(now)
        event = jobs_pb2.JobCancelRequested(job_id=job_id, tenant_id=tenant_id, reason=reason,
                                            requested_at=requested_at)
        await outbox.enqueue(conn, topics.JOBS_CANCEL_REQUESTED, job_id, event, tenant_id)
    return row


TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "expired"})


_STATE_NAMES = {value: name.removeprefix("JOB_STATE_").lower() for name, value in jobs_pb2.JobState.items()}


async def apply_status(pool: asyncpg.Pool, status: jobs_pb2.JobStatusChanged) -> bool:
    """Applies a status event unless a newer one already was; True if it changed the job."""
    state = _STATE_NAMES.get(status.state, "unspecified")
    at = status.at.ToDatetime(tzinfo=UTC)
    entry = {"status": state, "at": at.isoformat(), "progress": status.progress_percent}
    if status.error_code:
        entry["error_code"] = status.error_code
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE jobs SET state = $3, progress = $4, status_sequence = $2, timeline = timeline || $5::jsonb,"
            " error_code = NULLIF($6, ''), error_message = NULLIF($7, ''), output_uri = NULLIF($8, ''),"
            " output_seconds = NULLIF($9, 0::double precision), cost_micros = $10, currency = NULLIF($11, ''),"
            " updated_at = $12, thumbnail_uri = NULLIF($13, ''), sprite_uri = NULLIF($14, ''),"
            " completed_at = CASE WHEN $3 IN ('completed', 'failed', 'cancelled', 'expired') THEN $12::timestamptz END"
            " WHERE job_id = $1 AND status_sequence < $2 RETURNING *",
            status.job_id, int(status.sequence), state, int(status.progress_percent), json.dumps([entry]),
            status.error_code, status.error_message, status.output_uri, status.output_seconds,
            int(status.cost_micros) if status.cost_micros else None, status.currency, at,
            status.thumbnail_uri, status.sprite_uri,
        )
        if row is not None:
            await webhooks.enqueue_for_job(conn, row)
            if row["batch_id"] and row["state"] in TERMINAL_STATES:
                await batch_completion.on_job_ended(conn, row["tenant_id"], row["batch_id"])
    return row is not None


async def get_job_unscoped(pool: asyncpg.Pool, job_id: str) -> asyncpg.Record | None:
    """Only for requests that carry their own proof of access (a signed download URL)."""
    if not validation.is_id(job_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM jobs WHERE job_id = $1 AND deleted_at IS NULL", job_id
    )
    return row


async def list_webhook_deliveries(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str) -> list[asyncpg.Record] | None:
    if not validation.is_id(endpoint_id) or not await pool.fetchval(
            "SELECT true FROM webhook_endpoints WHERE endpoint_id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
            endpoint_id, tenant_id):
        return None
    return list(await pool.fetch(
        "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC LIMIT 100", endpoint_id))


async def replay_webhook_delivery(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str,
                                  delivery_id: str) -> asyncpg.Record | None:
    if not (validation.is_id(endpoint_id) and validation.is_id(delivery_id)):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "UPDATE webhook_deliveries d SET state = 'pending', attempts = 0, next_attempt_at = now()"
        " FROM webhook_endpoints e WHERE d.delivery_id = $1 AND d.endpoint_id = $2 AND e.endpoint_id = d.endpoint_id"
        " AND e.tenant_id = $3 AND e.deleted_at IS NULL RETURNING d.*",
        delivery_id, endpoint_id, tenant_id)
    return row
