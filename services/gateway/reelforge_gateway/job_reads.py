"""Status reads, coalesced: the job reads waiting at the same moment share one query (with the QC summary).

A reader takes every read queued while the previous query was in flight (no waiting when idle), so
under load one round trip answers many requests. Reads stay tenant-scoped: a read names its tenant and
job, and only that pair can match.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg

from reelforge_gateway import validation

_READ = (
    "SELECT j.*, q.render_id AS qc_render_id, q.summary AS qc_summary, q.checked_at AS qc_checked_at"
    " FROM unnest($1::text[], $2::text[]) AS r(job_id, tenant_id)"
    " JOIN jobs j ON j.job_id = r.job_id AND j.tenant_id = r.tenant_id AND j.deleted_at IS NULL"
    " LEFT JOIN qc_reports q ON q.job_id = j.job_id AND q.tenant_id = j.tenant_id"
)


@dataclass
class _Read:
    tenant_id: str
    job_id: str
    done: asyncio.Future[asyncpg.Record | None] = field(repr=False)


class JobReader:
    def __init__(self, pool: asyncpg.Pool, max_group: int = 256, readers: int = 2) -> None:
        self._pool = pool
        self._max_group = max_group
        self._readers = readers
        self._queue: list[_Read] = []
        self._active: set[asyncio.Task[None]] = set()

    async def get(self, tenant_id: str, job_id: str) -> asyncpg.Record | None:
        """The tenant's job with `qc_render_id`, `qc_summary`, `qc_checked_at` (None without a report),
        or None if the tenant has no such job."""
        if not validation.is_id(job_id):
            return None
        done: asyncio.Future[asyncpg.Record | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Read(tenant_id, job_id, done))
        if len(self._active) < self._readers:
            task = asyncio.create_task(self._read_while_queued(), name="job-reads")
            self._active.add(task)
            task.add_done_callback(self._active.discard)
        return await asyncio.shield(done)

    async def _read_while_queued(self) -> None:
        while self._queue:
            group, self._queue = self._queue[:self._max_group], self._queue[self._max_group:]
            try:
                rows = await self._pool.fetch(_READ, [r.job_id for r in group], [r.tenant_id for r in group])
            except BaseException as exc:
                for read in group:
                    if not read.done.done():
                        read.done.set_exception(exc if isinstance(exc, Exception) else ConnectionError("shutting down"))
                if not isinstance(exc, Exception):
                    raise
                continue
            found = {(row["tenant_id"], row["job_id"]): row for row in rows}
            for read in group:
                if not read.done.done():
                    read.done.set_result(found.get((read.tenant_id, read.job_id)))
