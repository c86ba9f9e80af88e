"""A batch ends when its last job does: mark it, and announce `batch.completed` to webhooks.

Called inside the status update's transaction. The batch row is locked first, so two of its jobs
ending at once in concurrent transactions cannot both miss the other: the second to take the lock
counts after the first committed (READ COMMITTED takes a new snapshot per statement).
"""

from __future__ import annotations

import asyncpg

from reelforge_gateway import webhooks


async def on_job_ended(conn: asyncpg.Connection, tenant_id: str, batch_id: str) -> bool:
    """True if this job was the batch's last to end (the batch is now completed)."""
    batch = await conn.fetchrow(
        "SELECT batch_id, completed_at, cancel_requested_at FROM batches"
        " WHERE batch_id = $1 AND tenant_id = $2 FOR UPDATE",
        batch_id, tenant_id,
    )
    if batch is None or batch["completed_at"] is not None:
        return False
    # One probe of a partial index of unfinished batch jobs; the full count only once, at the end.
    if await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE batch_id = $1 AND tenant_id = $2"
        " AND state NOT IN ('completed', 'failed', 'cancelled', 'expired'))", batch_id, tenant_id,
    ):
        return False
    counts = dict(await conn.fetch(
        "SELECT state, count(*) FROM jobs WHERE tenant_id = $1 AND batch_id = $2 GROUP BY state", tenant_id, batch_id,
    ))
    completed_at = await conn.fetchval(
        "UPDATE batches SET completed_at = now() WHERE batch_id = $1 RETURNING completed_at", batch_id)
    await webhooks.enqueue_event(conn, tenant_id, "batch.completed", {
        "id": batch_id, "status": "cancelled" if batch["cancel_requested_at"] else "completed",
        "counts": {state: int(count) for state, count in counts.items()}, "total": sum(counts.values()),
        "completed_at": completed_at.isoformat(),
    })
    return True
