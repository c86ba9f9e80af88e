"""usage.v1.recorded through real Kafka into usage rows: duplicates and replays record once,
undecodable records go to dlq.v1.billing, and nothing is charged."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.usage.v1 import usage_pb2
from reelforge_billing.__main__ import CONSUMER_GROUP
from reelforge_billing.usage import UsageRecorder
from reelforge_core import topics
from reelforge_core.kafka import EventConsumer, EventProducer, OutgoingRecord
from reelforge_local.infra import KafkaBroker
from services.billing.tests.billing_db import open_store

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("REELFORGE_CACHE", ROOT / ".cache"))
DLQ = topics.dead_letter_topic(CONSUMER_GROUP)
PARTITIONS = 2


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker.start(CACHE, tmp_path_factory.mktemp("kafka")) as broker:
        broker.create_topics([topics.USAGE_RECORDED, DLQ], partitions=PARTITIONS)
        yield broker


def usage_record(event_id: str, job_id: str, header_event_id: str) -> OutgoingRecord:
    at = Timestamp()
    at.GetCurrentTime()
    message = usage_pb2.UsageRecorded(
        event_id=event_id, tenant_id="t1", job_id=job_id, model="animatic", width=1280, height=720, seconds=8.0,
        provider="animatic", pool="animatic", charged_micros=200_000, at=at,
    )
    headers = {"event-id": header_event_id, "tenant-id": "t1", "event-type": "reelforge.usage.v1.UsageRecorded"}
    return OutgoingRecord(topics.USAGE_RECORDED, job_id.encode(), message.SerializeToString(), headers)


async def consume_until(consumer: EventConsumer, done: object) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(60):
            while not await done():  # type: ignore[operator]
                assert not task.done(), task
                await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.timeout(180)
@pytest.mark.asyncio
async def test_usage_events_are_recorded_exactly_once_and_poison_is_dead_lettered(
    kafka: KafkaBroker, postgres_dsn: str
) -> None:
    pool, store = await open_store(postgres_dsn)
    producer = EventProducer(kafka.bootstrap_servers, "test-orchestrator")
    await producer.start()
    try:
        await producer.send_all([
            usage_record("usage:j1", "j1", "h1"),
            usage_record("usage:j1", "j1", "h1"),  # the relay re-published a batch
            usage_record("usage:j1", "j1", "h2"),  # the orchestrator emitted it again (new header id)
            usage_record("usage:j2", "j2", "h3"),
            OutgoingRecord(topics.USAGE_RECORDED, b"j3", b"\xff\xff not protobuf", {"event-id": "h4"}),
        ])
        recorder = UsageRecorder(pool)
        for _ in range(2):  # the second pass replays everything, as after lost offsets
            consumer = EventConsumer(kafka.bootstrap_servers, CONSUMER_GROUP, [topics.USAGE_RECORDED],
                                     recorder.handle, producer, batch_handler=recorder.handle_batch)
            await consume_until(consumer, lambda: _committed_everything(kafka, CONSUMER_GROUP))
            await _rewind(kafka, CONSUMER_GROUP)
        rows = await pool.fetch("SELECT event_id, job_id, charged_micros FROM usage_records ORDER BY event_id")
        assert [tuple(r) for r in rows] == [("usage:j1", "j1", 200_000), ("usage:j2", "j2", 200_000)]
        # metering never moves money
        assert await pool.fetchval("SELECT count(*) FROM ledger_entries") == 0
        dead = await _dead_letters(kafka)
        # the poison record was dead-lettered on each delivery (2), nothing else was
        assert dead == [b"\xff\xff not protobuf"] * 2
    finally:
        await producer.stop()
        await pool.close()
        assert store is not None


async def _committed_everything(kafka: KafkaBroker, group: str) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topics.USAGE_RECORDED)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


async def _rewind(kafka: KafkaBroker, group: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topics.USAGE_RECORDED)
        consumer.assign(partitions)
        await consumer.commit({tp: 0 for tp in partitions})
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


async def _dead_letters(kafka: KafkaBroker) -> list[bytes]:
    consumer = AIOKafkaConsumer(DLQ, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return [record.value for records in batches.values() for record in records]
    finally:
        await consumer.stop()
