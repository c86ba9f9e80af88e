"""Group commit for job submissions: concurrent submits share one transaction (one fsync).

Each request still validates, moderates and renders its own answer; only the durable write is shared.
A writer takes every submission queued while the previous write was in flight (no waiting when idle,
bigger groups under load) and stores them with one multi-row insert of jobs, one of idempotency keys
and one of outbox events, in one transaction. Per-request guarantees stay:

- Idempotency: a key already stored is answered from the store (same body: the original answer; other
  body: IdempotencyKeyReused). Two submissions with one key in the same group: the later one waits for
  the next group, where the first one's answer is stored. A key claimed meanwhile by another instance
  (the insert waits for that transaction) drops this request's job from the group and answers from the store.
- Errors stay per request: if a group's write fails, each of its submissions is written on its own
  (`store.submit_job`), so one bad row fails only its request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from reelforge_core import outbox, topics
from reelforge_gateway import store

log = logging.getLogger(__name__)

Render = Callable[[asyncpg.Record], dict[str, Any]]

_COLUMNS = ("job_id", "tenant_id", "model", "prompt", "seconds", "width", "height", "narration", "voice", "seed",
            "timeline", "created_at", "requested_model", "metadata", "input_reference_uri", "batch_id",
            "template", "variant", "batch_line")
_TYPES = ("text", "text", "text", "text", "float8", "int4", "int4", "text", "text", "int8",
          "text", "timestamptz", "text", "text", "text", "text", "text", "int4", "int4")
_INSERT_JOBS = (
    f"INSERT INTO jobs ({', '.join(_COLUMNS)}, updated_at)"  # noqa: S608 (fixed names)
    f" SELECT {', '.join(c + '::jsonb' if c in ('timeline', 'metadata') else c for c in _COLUMNS)}, created_at"
    f" FROM unnest({', '.join(f'${i}::{t}[]' for i, t in enumerate(_TYPES, 1))}) AS r({', '.join(_COLUMNS)})"
    " RETURNING *"
)
_CLAIM_KEYS = (
    "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response, job_id)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::json[], $6::text[])"
    " ON CONFLICT DO NOTHING RETURNING job_id"
)
_STORED = (
    "SELECT i.tenant_id, i.key, i.request_hash, i.status_code, i.response FROM idempotency_keys i"
    " JOIN unnest($1::text[], $2::text[]) AS r(tenant_id, key) USING (tenant_id, key)"
)


@dataclass
class _Submission:
    job: store.NewJob
    idempotency: store.Idempotency | None
    status_code: int
    render: Render
    done: asyncio.Future[store.Submitted] = field(repr=False)
    job_id: str
    created_at: datetime
    # Built in the request's own context, so the event carries that request's trace.
    event: outbox.PreparedEvent


class GroupCommit:
    """Writes submissions in groups; `submit` is the per-request entry (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, max_group: int = 256, writers: int = 2) -> None:
        self._pool = pool
        self._max_group = max_group
        self._writers = writers  # groups in flight at once
        self._queue: list[_Submission] = []
        self._active: set[asyncio.Task[None]] = set()

    async def submit(self, job: store.NewJob, render: Render, status_code: int,
                     idempotency: store.Idempotency | None) -> store.Submitted:
        done: asyncio.Future[store.Submitted] = asyncio.get_running_loop().create_future()
        job_id, now = store.new_id("job"), datetime.now(UTC)
        event = outbox.prepare(topics.JOBS_SUBMITTED, job_id, store.submitted_event(job_id, job, now), job.tenant_id)
        self._queue.append(_Submission(job, idempotency, status_code, render, done, job_id, now, event))
        self._spawn()
        return await asyncio.shield(done)  # a client that goes away must not cancel the others' write

    async def close(self) -> None:
        """Stops the writers; what they had not written is answered with an error."""
        for task in list(self._active):
            task.cancel()
        await asyncio.gather(*self._active, return_exceptions=True)

    def _spawn(self) -> None:
        # Writers run while there is work and then end, so an idle gateway holds no task.
        if len(self._active) < self._writers and self._queue:
            task = asyncio.create_task(self._write_while_queued(), name="group-commit")
            self._active.add(task)
            task.add_done_callback(self._active.discard)

    async def _write_while_queued(self) -> None:
        while self._queue:
            group, self._queue = self._queue[:self._max_group], self._queue[self._max_group:]
            try:
                await self._write(group)
            except Exception as exc:  # anything: write each on its own, so an error stays with its request
                log.warning("group commit failed; writing its submissions one by one",
                            extra={"error": f"{type(exc).__name__}: {exc}", "count": len(group)})
                await asyncio.gather(*(self._write_one(item) for item in group if not item.done.done()))
            except BaseException:  # cancelled (shutdown): nobody else will answer these
                for item in group + self._queue:
                    if not item.done.done():
                        item.done.set_exception(ConnectionError("the gateway is shutting down"))
                raise

    async def _write_one(self, item: _Submission) -> None:
        try:
            item.done.set_result(await store.submit_job(self._pool, item.job, item.render, item.status_code,
                                                        item.idempotency))
        except Exception as exc:
            item.done.set_exception(exc)

    async def _write(self, group: list[_Submission]) -> None:
        later: list[_Submission] = []
        keyed: dict[tuple[str, str], _Submission] = {}
        writes: list[_Submission] = []
        for item in group:
            if item.idempotency is None:
                writes.append(item)
            elif (item.job.tenant_id, item.idempotency.key) in keyed:
                later.append(item)  # the same key twice in one group: answer it once the first is stored
            else:
                keyed[(item.job.tenant_id, item.idempotency.key)] = item
        async with self._pool.acquire() as conn:
            if keyed:
                writes += await self._unanswered(conn, keyed)
            if writes:
                await self._store(conn, writes, later)
        if later:
            self._queue[:0] = later

    async def _unanswered(self, conn: asyncpg.Connection,
                          keyed: dict[tuple[str, str], _Submission]) -> list[_Submission]:
        """Answers the keyed submissions whose key is already stored; returns the others."""
        rows = await conn.fetch(_STORED, [t for t, _ in keyed], [k for _, k in keyed])
        for row in rows:
            item = keyed.pop((row["tenant_id"], row["key"]))
            _answer_from_store(item, row)
        return list(keyed.values())

    async def _store(self, conn: asyncpg.Connection, writes: list[_Submission], later: list[_Submission]) -> None:
        async with conn.transaction():
            rows = await conn.fetch(_INSERT_JOBS, *_job_columns(writes))
            by_id = {row["job_id"]: row for row in rows}
            answers = {item.job_id: item.render(by_id[item.job_id]) for item in writes}
            claimed = [item for item in writes if item.idempotency is not None]
            lost: list[_Submission] = []
            if claimed:
                keys = [i.idempotency for i in claimed if i.idempotency is not None]
                won = {row["job_id"] for row in await conn.fetch(
                    _CLAIM_KEYS, [i.job.tenant_id for i in claimed], [k.key for k in keys],
                    [k.request_hash for k in keys], [i.status_code for i in claimed],
                    [json.dumps(answers[i.job_id]) for i in claimed], [i.job_id for i in claimed])}
                lost = [item for item in claimed if item.job_id not in won]
                if lost:  # another instance stored these keys first: drop our jobs, answer from the store
                    await conn.execute("DELETE FROM jobs WHERE job_id = ANY($1::text[])", [i.job_id for i in lost])
            kept = [item for item in writes if item not in lost]
            await outbox.enqueue_prepared(conn, [item.event for item in kept])
        for item in kept:
            if not item.done.done():
                item.done.set_result(store.Submitted(item.status_code, answers[item.job_id], replayed=False))
        later.extend(lost)  # their job ids were never committed; the next group answers them from the store


def _answer_from_store(item: _Submission, row: asyncpg.Record) -> None:
    assert item.idempotency is not None
    if item.done.done():
        return
    if row["request_hash"] != item.idempotency.request_hash:
        item.done.set_exception(store.IdempotencyKeyReused())
    else:
        item.done.set_result(store.Submitted(row["status_code"], json.loads(row["response"]), replayed=True))


def _job_columns(writes: list[_Submission]) -> list[list[Any]]:
    jobs = [item.job for item in writes]
    return [
        [item.job_id for item in writes], [j.tenant_id for j in jobs], [j.model for j in jobs],
        [j.prompt for j in jobs], [j.seconds for j in jobs], [j.width for j in jobs], [j.height for j in jobs],
        [j.narration for j in jobs], [j.voice for j in jobs], [j.seed for j in jobs],
        [json.dumps([{"status": "queued", "at": item.created_at.isoformat()}]) for item in writes],
        [item.created_at for item in writes], [j.requested_model for j in jobs], [json.dumps(j.metadata) for j in jobs],
        [j.input_reference_uri for j in jobs], [j.batch_id for j in jobs], [j.template for j in jobs],
        [j.variant for j in jobs], [j.batch_line for j in jobs],
    ]
