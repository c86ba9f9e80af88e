"""Transactional outbox: `enqueue` inside the caller's transaction, `OutboxRelay` publishes to Kafka.

The relay holds a per-schema advisory lock so exactly one instance publishes (preserving per-key
order); others wait as standbys. A batch is deleted only after Kafka acknowledged all of it, so a
crash re-publishes at most one batch; consumers dedupe by the `event-id` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from google.protobuf.message import Message

from reelforge_core import metrics, telemetry
from reelforge_core.kafka import EventProducer, OutgoingRecord

log = logging.getLogger(__name__)


async def enqueue(
    conn: asyncpg.Connection,
    topic: str,
    key: str,
    message: Message,
    tenant_id: str | None = None,
) -> str:
    """Adds an event to the outbox; it is published only if the surrounding transaction commits."""
    headers = _headers(message, tenant_id, telemetry.inject_headers())
    await conn.execute(
        "INSERT INTO outbox (topic, key, payload, headers) VALUES ($1, $2, $3, $4::jsonb)",
        topic,
        key.encode(),
        message.SerializeToString(),
        json.dumps(headers),
    )  # the outbox's insert trigger wakes the relay when the transaction commits
    return headers["event-id"]


async def enqueue_many(
    conn: asyncpg.Connection,
    topic: str,
    events: Sequence[tuple[str, Message]],
    tenant_id: str | None = None,
) -> list[str]:
    """`enqueue` for many (key, message) pairs in one COPY (thousands per transaction), in order."""
    trace_headers = telemetry.inject_headers()
    rows = []
    event_ids = []
    for key, message in events:
        headers = _headers(message, tenant_id, trace_headers)
        event_ids.append(headers["event-id"])
        rows.append((topic, key.encode(), message.SerializeToString(), json.dumps(headers)))
    if rows:
        await conn.copy_records_to_table("outbox", records=rows, columns=["topic", "key", "payload", "headers"])
    return event_ids


@dataclass(frozen=True)
class PreparedEvent:
    """An outbox row built in the producing request's context (its trace context in the headers), to be
    written later with others by `enqueue_prepared`, e.g. by a group commit that serves many requests."""

    topic: str
    key: bytes
    payload: bytes
    headers: str  # JSON
    event_id: str


def prepare(topic: str, key: str, message: Message, tenant_id: str | None = None) -> PreparedEvent:
    headers = _headers(message, tenant_id, telemetry.inject_headers())
    return PreparedEvent(topic, key.encode(), message.SerializeToString(), json.dumps(headers), headers["event-id"])


async def enqueue_prepared(conn: asyncpg.Connection, events: Sequence[PreparedEvent]) -> None:
    """Writes prepared events in one statement (and one wake-up for the relay), in order, inside the
    caller's transaction."""
    if not events:
        return
    await conn.execute(
        "WITH added AS (INSERT INTO outbox (topic, key, payload, headers)"
        " SELECT t, k, p, h::jsonb FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::text[])"
        " WITH ORDINALITY AS e(t, k, p, h, n) ORDER BY n RETURNING 1)"
        " SELECT pg_notify('outbox_' || current_schema(), '') FROM (SELECT 1 FROM added LIMIT 1) AS any_added",
        [e.topic for e in events], [e.key for e in events], [e.payload for e in events], [e.headers for e in events],
    )


def _headers(message: Message, tenant_id: str | None, trace_headers: dict[str, str]) -> dict[str, str]:
    headers = {
        "event-id": str(uuid.uuid4()),
        "event-type": message.DESCRIPTOR.full_name,
        "content-type": "application/x-protobuf",
        **trace_headers,
    }
    if tenant_id:
        headers["tenant-id"] = tenant_id
    return headers


async def already_processed(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT true FROM inbox WHERE consumer = $1 AND event_id = $2", consumer, event_id)
    )


async def mark_processed(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Records the event as applied; False if it already was (then roll back the transaction)."""
    inserted = await conn.fetchval(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event_id,
    )
    return bool(inserted)


async def forget_processed(pool: asyncpg.Pool, older_than_hours: float, batch: int = 10_000) -> int:
    """Deletes inbox entries processed longer ago than `older_than_hours`, in batches (no long lock);
    returns how many. The retention must outlast every way a duplicate can still arrive (Kafka's
    retention for consumed topics; a provider's webhook retries), or a late duplicate would apply twice."""
    forgotten = 0
    while True:
        deleted = await pool.fetchval(
            "WITH old AS (SELECT ctid FROM inbox WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)"
            " , gone AS (DELETE FROM inbox WHERE ctid IN (SELECT ctid FROM old) RETURNING 1)"
            " SELECT count(*) FROM gone",
            older_than_hours * 3600.0,
            batch,
        )
        forgotten += int(deleted)
        if deleted < batch:
            return forgotten


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        schema: str,
        batch_size: int = 500,
        idle_poll_seconds: float = 0.5,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._schema = schema
        self._batch_size = batch_size
        self._idle_poll = idle_poll_seconds
        self._wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._lead_and_publish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                log.warning("outbox relay interrupted; restarting", extra={"error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(1)

    async def _lead_and_publish(self) -> None:
        async with self._pool.acquire() as session:
            # Standby: poll the lock another instance holds (it is freed when that session ends).
            while not await session.fetchval(  # noqa: ASYNC110
                "SELECT pg_try_advisory_lock(hashtext($1))", self._lock_name
            ):
                await asyncio.sleep(1)
            channel = f"outbox_{self._schema}"
            await session.add_listener(channel, self._on_notify)
            # The relay's own commits (deleting what Kafka acknowledged) need not wait for the disk: a
            # delete lost in a crash only publishes those events again, which consumers dedupe by
            # event id. That takes a disk flush off the path of every event published after another.
            # Session-wide on this connection only: the pool's reset (RESET ALL) undoes it on release.
            await session.execute("SET synchronous_commit TO off")
            try:
                while True:
                    self._wake.clear()  # a commit notified from here on wakes the wait below at once
                    published = await self.publish_batch(session)
                    if published < self._batch_size:
                        await self._wait_for_work()
            finally:
                await session.remove_listener(channel, self._on_notify)
                await session.execute("SELECT pg_advisory_unlock(hashtext($1))", self._lock_name)

    @property
    def _lock_name(self) -> str:
        return f"outbox-relay:{self._schema}"

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self._idle_poll)

    async def publish_batch(self, conn: asyncpg.Connection | None = None) -> int:
        """Publishes up to one batch, oldest first, on `conn` (the relay's session) or a pooled connection."""
        if conn is None:
            async with self._pool.acquire() as pooled:
                return await self.publish_batch(pooled)
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                metrics.OUTBOX_BACKLOG.set(0)
                return 0
            metrics.OUTBOX_BACKLOG.set(len(rows))
            records = [
                OutgoingRecord(
                    topic=row["topic"], key=row["key"], value=row["payload"], headers=json.loads(row["headers"])
                )
                for row in rows
            ]
            await self._producer.send_all(records)
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
        for record in records:
            metrics.OUTBOX_PUBLISHED.labels(record.topic).inc()
        return len(rows)
