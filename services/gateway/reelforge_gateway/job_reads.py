"""Status reads: coalesced, and answered from memory while the job is unchanged.

Coalesced: the job reads waiting at the same moment share one query (with the QC summary). A reader takes
every read queued while the previous query was in flight (no waiting when idle), so under load one round
trip answers many requests. Reads stay tenant-scoped: a read names its tenant and job, and only that pair
can match.

Cached: partners poll their jobs (the OpenAI SDK's create_and_poll does), and most polls find the job as it
was. A job's row is kept after a read and dropped when the job changes: every update of a job's row, and
every QC report, notifies the gateway's transitions channel (migrations 0050, 0060), which the process's
listening connection (reelforge_core.listen) delivers here. PostgreSQL signals the listeners before the
writer's commit returns, so the notification is on its way before a partner can be told of the change (an
API answer, a webhook); a read that still beats it answers the job as it was just before. A read that was
in flight when its job changed is not kept (it may predate the change). While the listening connection is
down nothing is cached, and an entry is kept `cache_seconds` at most, so even a change that reached the
database without its trigger is seen within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from reelforge_core.listen import Listener
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
    began: int = 0  # the cache's change count when the read was queued (before its query started)


@dataclass(slots=True)
class _Kept:
    tenant_id: str
    row: asyncpg.Record
    until: float
    answer: bytes | None = None  # the row rendered for the API, once asked for


class RowCache:
    """Job rows by job id, dropped when the job changes; on only while its notifications are live."""

    def __init__(self, entries: int, seconds: float) -> None:
        self._entries = entries
        self._seconds = seconds
        self._kept: dict[str, _Kept] = {}
        self.live = False
        # Every change counts; a read may be kept only if its job has not changed since the read was queued.
        self._changes = 0
        self._changed_at: dict[str, int] = {}
        self._forgotten_before = 0  # reads queued before this count are not kept (their changes were dropped)

    @property
    def on(self) -> bool:
        return self.live and self._entries > 0 and self._seconds > 0

    def follow(self, feed: Listener, channel: str) -> None:
        feed.on_notify(channel, self.changed)
        feed.on_state(self._listening)

    def _listening(self, live: bool) -> None:
        self.live = live
        self.clear()

    def clear(self) -> None:
        self._changes += 1
        self._kept.clear()
        self._changed_at.clear()
        self._forgotten_before = self._changes

    def changed(self, job_id: str) -> None:
        self._changes += 1
        self._kept.pop(job_id, None)
        if len(self._changed_at) >= 4 * self._entries + 1024:  # bounded: forget them, refuse older reads
            self._changed_at.clear()
            self._forgotten_before = self._changes
        self._changed_at[job_id] = self._changes

    def mark(self) -> int:
        return self._changes

    def get(self, tenant_id: str, job_id: str) -> asyncpg.Record | None:
        kept = self._kept.get(job_id)
        if kept is None or kept.tenant_id != tenant_id:
            return None
        if kept.until < time.monotonic():
            del self._kept[job_id]
            return None
        return kept.row

    def answer(self, job_id: str, row: asyncpg.Record, render: Callable[[asyncpg.Record], bytes]) -> bytes:
        """`render(row)`, rendered once while `row` is the one kept for the job."""
        kept = self._kept.get(job_id)
        if kept is None or kept.row is not row:
            return render(row)
        if kept.answer is None:
            kept.answer = render(row)
        return kept.answer

    def keep(self, tenant_id: str, job_id: str, row: asyncpg.Record, began: int) -> None:
        if not self.on or began < self._forgotten_before or self._changed_at.get(job_id, -1) > began:
            return
        if len(self._kept) >= self._entries:
            del self._kept[next(iter(self._kept))]  # the oldest kept
        self._kept[job_id] = _Kept(tenant_id, row, time.monotonic() + self._seconds)


class JobReader:
    def __init__(self, pool: asyncpg.Pool, max_group: int = 256, readers: int = 2,
                 cache_entries: int = 20_000, cache_seconds: float = 30.0) -> None:
        self._pool = pool
        self._max_group = max_group
        self._readers = readers
        self._queue: list[_Read] = []
        self._active: set[asyncio.Task[None]] = set()
        self.cache = RowCache(cache_entries, cache_seconds)

    async def get(self, tenant_id: str, job_id: str) -> asyncpg.Record | None:
        """The tenant's job with `qc_render_id`, `qc_summary`, `qc_checked_at` (None without a report),
        or None if the tenant has no such job."""
        if not validation.is_id(job_id):
            return None
        if self.cache.on and (row := self.cache.get(tenant_id, job_id)) is not None:
            return row
        done: asyncio.Future[asyncpg.Record | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Read(tenant_id, job_id, done, self.cache.mark()))
        if len(self._active) < self._readers:
            task = asyncio.create_task(self._read_while_queued(), name="job-reads")
            self._active.add(task)
            task.add_done_callback(self._active.discard)
        return await asyncio.shield(done)

    async def _read_while_queued(self) -> None:
        # One connection for the whole run of queries, not one per query: handing a connection back to the
        # pool costs a round trip (asyncpg resets its session).
        while self._queue:
            try:
                async with self._pool.acquire() as conn:
                    await self._read_on(conn)  # until the queue is empty, or the connection is lost
            except BaseException as exc:  # no connection: the reads queued now fail with it
                queued, self._queue = self._queue, []
                self._fail(queued, exc)
                if not isinstance(exc, Exception):
                    raise

    async def _read_on(self, conn: asyncpg.Connection) -> None:
        while self._queue:
            group, self._queue = self._queue[:self._max_group], self._queue[self._max_group:]
            try:
                rows = await conn.fetch(_READ, [r.job_id for r in group], [r.tenant_id for r in group])
            except BaseException as exc:
                self._fail(group, exc)
                if not isinstance(exc, Exception):
                    raise
                if conn.is_closed():
                    return  # the rest are read on another connection
                continue
            found = {(row["tenant_id"], row["job_id"]): row for row in rows}
            for read in group:
                row = found.get((read.tenant_id, read.job_id))
                if row is not None:
                    self.cache.keep(read.tenant_id, read.job_id, row, read.began)
                if not read.done.done():
                    read.done.set_result(row)

    @staticmethod
    def _fail(reads: list[_Read], exc: BaseException) -> None:
        for read in reads:
            if not read.done.done():
                read.done.set_exception(exc if isinstance(exc, Exception) else ConnectionError("shutting down"))
