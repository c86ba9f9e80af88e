"""The one Kafka producer and consumer wrapper.

Records carry protobuf payloads, the job id as key and metadata in headers (see proto/README.md).
The consumer hands records to a handler one at a time per partition and commits a record's
offset only after the handler returned, so a crash means redelivery, never loss; handlers are
idempotent. A record that can never be handled goes to the group's dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaError
from google.protobuf.message import DecodeError, Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from reelforge_core import metrics, telemetry, topics, transient
from reelforge_core.context import job_context

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

M = TypeVar("M", bound=Message)


class PoisonMessage(Exception):
    """The record can never be handled (undecodable, impossible content): dead-letter it and move on."""


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: Mapping[str, str]

    @property
    def event_id(self) -> str:
        return self.headers.get("event-id") or f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def tenant_id(self) -> str | None:
        return self.headers.get("tenant-id")

    def parse(self, message_type: type[M]) -> M:
        message = message_type()
        try:
            message.ParseFromString(self.value)
        except DecodeError as exc:
            raise PoisonMessage(f"not a valid {message_type.DESCRIPTOR.full_name}: {exc}") from exc
        return message


def _decode_headers(raw: list[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: value.decode("utf-8", "replace") for name, value in raw or []}


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


C = TypeVar("C", AIOKafkaProducer, AIOKafkaConsumer)


async def start_when_broker_is_up(make: Callable[[], C], what: str) -> C:
    """Starts a client, waiting (with backoff) for the broker, so services may start before Kafka."""
    delay = 0.2
    while True:
        client = make()
        try:
            await client.start()
            return client
        except KafkaConnectionError as exc:
            with contextlib.suppress(Exception):
                await client.stop()
            log.warning("waiting for kafka", extra={"client": what, "error": str(exc), "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class EventProducer:
    """Idempotent producer, acks from all in-sync replicas."""

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = await start_when_broker_is_up(
            lambda: AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=2,
                request_timeout_ms=15000,
            ),
            self._client_id,
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send_all(self, records: list[OutgoingRecord]) -> None:
        """Sends the records in order and returns once the broker acknowledged every one."""
        if self._producer is None:
            raise RuntimeError("producer not started")
        producer = self._producer
        pending = [
            await producer.send(
                record.topic, record.value, key=record.key, headers=_encode_headers(record.headers)
            )
            for record in records
        ]
        await asyncio.gather(*pending)


Handler = Callable[[Event], Awaitable[None]]

@dataclass
class RetryPolicy:
    """Transient failures are retried for as long as they last; others a few times, then dead-lettered."""

    first_delay: float = 0.2
    max_delay: float = 10.0
    attempts_for_unknown_errors: int = 5
    is_transient: Callable[[BaseException], bool] = transient.is_transient

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (attempt - 1)))


class EventConsumer:
    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic_names: list[str],
        handler: Handler,
        dead_letters: EventProducer,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.group = group
        self._topics = topic_names
        self._handler = handler
        self._dead_letters = dead_letters
        self._retry = retry or RetryPolicy()
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()

    def _make_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=900_000,
        )

    async def _wait_for_topics(self, consumer: AIOKafkaConsumer) -> None:
        while missing := set(self._topics) - await consumer.topics():
            log.warning("waiting for topics to exist", extra={"missing": sorted(missing)})
            await asyncio.sleep(0.5)

    async def run(self) -> None:
        self._consumer = consumer = await start_when_broker_is_up(self._make_consumer, self.group)
        try:
            await self._wait_for_topics(consumer)
            consumer.subscribe(self._topics)
            self.ready.set()
            lag_sampled = 0.0
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=100)
                for partition, records in batches.items():
                    for record in records:
                        await self._handle(record)
                        await self._commit(partition, record.offset + 1)
                if time.monotonic() - lag_sampled >= 1.0:
                    lag_sampled = time.monotonic()
                    await self._sample_lag(consumer)
        finally:
            self.ready.clear()
            await consumer.stop()

    async def _sample_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag: dict[str, int] = dict.fromkeys(self._topics, 0)
        for partition in consumer.assignment():
            highwater = consumer.highwater(partition)
            if highwater is not None:
                lag[partition.topic] += max(0, highwater - await consumer.position(partition))
        for topic, records in lag.items():
            metrics.CONSUMER_LAG.labels(self.group, topic).set(records)

    async def _commit(self, partition: object, offset: int) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit({partition: offset})
        except CommitFailedError:
            # The partition moved to another member during a rebalance; it will see the record again
            # and the idempotent handler will make that harmless.
            log.warning("offset commit lost to a rebalance", extra={"offset": offset})

    async def _handle(self, record: object) -> None:
        event = Event(
            topic=record.topic,  # type: ignore[attr-defined]
            partition=record.partition,  # type: ignore[attr-defined]
            offset=record.offset,  # type: ignore[attr-defined]
            key=record.key.decode() if record.key else None,  # type: ignore[attr-defined]
            value=record.value or b"",  # type: ignore[attr-defined]
            headers=_decode_headers(record.headers),  # type: ignore[attr-defined]
        )
        parent = telemetry.context_from(event.headers)
        started = time.perf_counter()
        with (
            _tracer.start_as_current_span(
                f"consume {event.topic}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "kafka", "messaging.destination.name": event.topic,
                            "messaging.consumer.group.name": self.group, "reelforge.job_id": event.key or ""},
            ) as span,
            job_context(job_id=event.key, tenant_id=event.tenant_id),
        ):
            outcome = await self._handle_with_retries(event, span)
        metrics.EVENTS_CONSUMED.labels(self.group, event.topic, outcome).inc()
        metrics.EVENT_HANDLER_SECONDS.labels(self.group, event.topic).observe(time.perf_counter() - started)

    async def _handle_with_retries(self, event: Event, span: trace.Span) -> str:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._handler(event)
                return "ok"
            except PoisonMessage as exc:
                await self._dead_letter(event, str(exc))
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
                return "dead_letter"
            except Exception as exc:
                transient = self._retry.is_transient(exc)
                if not transient and attempt >= self._retry.attempts_for_unknown_errors:
                    log.exception("handler keeps failing; dead-lettering", extra={"attempt": attempt})
                    await self._dead_letter(event, f"{type(exc).__name__}: {exc}")
                    span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
                    return "dead_letter"
                delay = self._retry.delay(attempt)
                log.warning(
                    "handler failed; retrying",
                    extra={"attempt": attempt, "retry_in_s": delay, "error": f"{type(exc).__name__}: {exc}"},
                )
                metrics.EVENTS_CONSUMED.labels(self.group, event.topic, "retry").inc()
                await asyncio.sleep(delay)

    async def _dead_letter(self, event: Event, reason: str) -> None:
        headers = dict(event.headers)
        headers["dlq-reason"] = reason[:1000]
        headers["dlq-source"] = f"{event.topic}/{event.partition}/{event.offset}"
        record = OutgoingRecord(
            topic=topics.dead_letter_topic(self.group),
            key=event.key.encode() if event.key else None,
            value=event.value,
            headers=headers,
        )
        while True:
            try:
                await self._dead_letters.send_all([record])
                log.error("record dead-lettered", extra={"reason": reason, "source": headers["dlq-source"]})
                return
            except KafkaError:
                log.warning("dead-letter topic unavailable; retrying")
                await asyncio.sleep(1)
