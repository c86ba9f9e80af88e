"""Usage ingest with exactly-once dedupe: usage.v1.recorded records through the consumer's code path.

    ./run bench bench/billing_ingest.py [--events 200000] [--duplicates 0.1] [--batch 1000]

Builds serialized UsageRecorded events with Kafka headers (a share of them delivered twice, as
after a redelivery), then feeds them to `UsageRecorder`: parse each record exactly as the Kafka
handler does (`from_message(event.parse(...))`), then `record(batch)`: one transaction per batch that
inserts the event ids into the inbox with ON CONFLICT DO NOTHING and the fresh usage rows with
ON CONFLICT DO NOTHING. Also measures the handler one event per transaction (how the
EventConsumer calls it today). Checks that every distinct event was recorded exactly once.
Target: 10,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid

from billing_common import postgres
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.usage.v1 import usage_pb2
from reelforge_billing.__main__ import SCHEMA
from reelforge_billing.usage import UsageRecorder, from_message
from reelforge_core import db, topics
from reelforge_core.kafka import Event


def make_events(count: int, duplicates: float, prefix: str) -> tuple[list[Event], int]:
    """`count` deliveries of which about `duplicates` are repeats of earlier ones; returns them and the
    number of distinct event ids."""
    at = Timestamp()
    at.GetCurrentTime()
    distinct: list[Event] = []
    deliveries: list[Event] = []
    for offset in range(count):
        if distinct and random.random() < duplicates:
            deliveries.append(random.choice(distinct))
            continue
        job = f"{prefix}-job-{offset}"
        message = usage_pb2.UsageRecorded(
            event_id=f"usage:{job}", tenant_id=f"tenant-{offset % 50}", job_id=job, model="animatic",
            width=1280, height=720, seconds=8.0, provider="animatic", pool="animatic",
            provider_cost_micros=0 if offset % 2 else 16_000, charged_micros=200_000, at=at,
        )
        event = Event(topic=topics.USAGE_RECORDED, partition=offset % 3, offset=offset, key=job,
                      value=message.SerializeToString(),
                      headers={"event-id": str(uuid.uuid4()), "tenant-id": message.tenant_id})
        distinct.append(event)
        deliveries.append(event)
    return deliveries, len(distinct)


async def run(dsn: str, args: argparse.Namespace) -> int:
    pool = await db.create_pool(dsn, SCHEMA, 4)
    try:
        recorder = UsageRecorder(pool)
        ok = True

        # 1) batches, as a batching consumer would hand them over
        deliveries, distinct = make_events(args.events, args.duplicates, "batch")
        started = time.perf_counter()
        recorded = 0
        for i in range(0, len(deliveries), args.batch):
            chunk = deliveries[i:i + args.batch]
            rows = [from_message(e.parse(usage_pb2.UsageRecorded), e.event_id) for e in chunk]
            recorded += await recorder.record(rows)
        elapsed = time.perf_counter() - started
        stored = await pool.fetchval("SELECT count(*) FROM usage_records WHERE job_id LIKE 'batch-%'")
        batch_rate = len(deliveries) / elapsed
        print(f"usage ingest, batches of {args.batch}: {len(deliveries):,} deliveries "
              f"({len(deliveries) - distinct:,} duplicates) in {elapsed:.2f} s = "
              f"{len(deliveries) / elapsed:,.0f} events/s ({distinct / elapsed:,.0f} distinct/s)")
        print(f"  recorded {recorded:,}, rows stored {stored:,}, distinct events {distinct:,}: "
              f"{'exactly once' if recorded == stored == distinct else 'MISMATCH'}")
        ok &= recorded == stored == distinct

        # 2) redelivery of the whole stream (offsets lost): nothing new
        started = time.perf_counter()
        again = 0
        for i in range(0, len(deliveries), args.batch):
            chunk = deliveries[i:i + args.batch]
            again += await recorder.record([from_message(e.parse(usage_pb2.UsageRecorded), e.event_id) for e in chunk])
        elapsed = time.perf_counter() - started
        print(f"  full replay: {len(deliveries):,} deliveries in {elapsed:.2f} s = "
              f"{len(deliveries) / elapsed:,.0f} events/s, newly recorded {again}")
        ok &= again == 0

        # 3) the Kafka handler as the EventConsumer calls it today: one event, one transaction
        singles, single_distinct = make_events(args.single_events, args.duplicates, "single")
        started = time.perf_counter()
        for event in singles:
            await recorder.handle(event)
        elapsed = time.perf_counter() - started
        stored = await pool.fetchval("SELECT count(*) FROM usage_records WHERE job_id LIKE 'single-%'")
        print(f"usage ingest, handler per event (one transaction each): {len(singles):,} deliveries in "
              f"{elapsed:.2f} s = {len(singles) / elapsed:,.0f} events/s; rows {stored:,} of {single_distinct:,} "
              f"distinct: {'exactly once' if stored == single_distinct else 'MISMATCH'}")
        ok &= stored == single_distinct
        print(f"  target 10,000 events/s on the batched path: {'met' if batch_rate >= 10_000 else 'NOT met'}")
        return 0 if ok else 1
    finally:
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--single-events", type=int, default=5_000)
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    random.seed(7)
    with postgres("billing-ingest") as dsn:
        return asyncio.run(run(dsn, args))


if __name__ == "__main__":
    sys.exit(main())
