"""The gateway's tables: tenants, keys, and the partner-facing view of jobs."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import outbox, topics
from reelforge_gateway import keys


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
        "SELECT key_id, tenant_id, key_hash, scopes FROM api_keys"
        " WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        prefix,
    )
    return row


async def insert_job(pool: asyncpg.Pool, job: NewJob) -> asyncpg.Record:
    """Stores the job and its JobSubmitted event in one transaction."""
    job_id = new_id("job")
    now = datetime.now(UTC)
    timeline = [{"status": "queued", "at": now.isoformat()}]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO jobs (job_id, tenant_id, model, prompt, seconds, width, height, narration, voice, seed,"
            " timeline, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $12)"
            " RETURNING *",
            job_id, job.tenant_id, job.model, job.prompt, job.seconds, job.width, job.height, job.narration,
            job.voice, job.seed, json.dumps(timeline), now,
        )
        submitted_at = Timestamp()
        submitted_at.FromDatetime(now)
        event = jobs_pb2.JobSubmitted(
            job_id=job_id,
            tenant_id=job.tenant_id,
            submitted_at=submitted_at,
            spec=jobs_pb2.JobSpec(
                prompt=job.prompt, seconds=job.seconds, width=job.width, height=job.height,
                narration=job.narration or "", model=job.model, seed=job.seed, voice=job.voice,
            ),
        )
        await outbox.enqueue(conn, topics.JOBS_SUBMITTED, job_id, event, job.tenant_id)
    assert row is not None
    return row


async def get_job(pool: asyncpg.Pool, tenant_id: str, job_id: str) -> asyncpg.Record | None:
    """Tenant-scoped: another tenant's job is indistinguishable from a missing one."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM jobs WHERE job_id = $1 AND tenant_id = $2", job_id, tenant_id
    )
    return row


_STATE_NAMES = {value: name.removeprefix("JOB_STATE_").lower() for name, value in jobs_pb2.JobState.items()}


async def apply_status(pool: asyncpg.Pool, status: jobs_pb2.JobStatusChanged) -> bool:
    """Applies a status event unless a newer one already was; True if it changed the job."""
    state = _STATE_NAMES.get(status.state, "unspecified")
    at = status.at.ToDatetime(tzinfo=UTC)
    entry = {"status": state, "at": at.isoformat(), "progress": status.progress_percent}
    if status.error_code:
        entry["error_code"] = status.error_code
    updated = await pool.fetchval(
        "UPDATE jobs SET state = $3, progress = $4, status_sequence = $2, timeline = timeline || $5::jsonb,"
        " error_code = NULLIF($6, ''), error_message = NULLIF($7, ''), output_uri = NULLIF($8, ''),"
        " output_seconds = NULLIF($9, 0::double precision), cost_micros = $10, currency = NULLIF($11, ''),"
        " updated_at = $12"
        " WHERE job_id = $1 AND status_sequence < $2 RETURNING true",
        status.job_id, int(status.sequence), state, int(status.progress_percent), json.dumps([entry]),
        status.error_code, status.error_message, status.output_uri, status.output_seconds,
        int(status.cost_micros) if status.cost_micros else None, status.currency, at,
    )
    return bool(updated)
