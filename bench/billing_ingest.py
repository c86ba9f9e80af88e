"""Usage ingest with exactly-once dedupe: usage.v1.recorded records through the consumer's code path.

    ./run bench bench/billing_ingest.py [--events 100000] [--duplicates 0.1] [--batch 100]

Builds serialized UsageRecorded events with Kafka headers (a share of them delivered twice, as
after a redelivery), then feeds them to the consumer's batch handler, `UsageRecorder.handle_batch`,
in batches of `--batch` records (the EventConsumer polls at most 100 records and hands each
partition's records over in one call): parse every record, then one statement that inserts the event
ids into the inbox with ON CONFLICT DO NOTHING and the usage rows of the new ones. Also measures the
single-record handler (`handle`, used for a lone record or when a batch fails). Checks that every
distinct event was recorded exactly once. Target: 10,000 events/s.
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
from reelforge_billing.usage import UsageRecorder
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

        # 1) batches, as the consumer hands them over
        deliveries, distinct = make_events(args.events, args.duplicates, "batch")
        started = time.perf_counter()
        for i in range(0, len(deliveries), args.batch):
            await recorder.handle_batch(deliveries[i:i + args.batch])
        elapsed = time.perf_counter() - started
        stored = await pool.fetchval("SELECT count(*) FROM usage_records WHERE job_id LIKE 'batch-%'")
        batch_rate = len(deliveries) / elapsed
        print(f"usage ingest, batches of {args.batch}: {len(deliveries):,} deliveries "
              f"({len(deliveries) - distinct:,} duplicates) in {elapsed:.2f} s = "
              f"{len(deliveries) / elapsed:,.0f} events/s ({distinct / elapsed:,.0f} distinct/s)")
        print(f"  rows stored {stored:,}, distinct events {distinct:,}: "
              f"{'exactly once' if stored == distinct else 'MISMATCH'}")
        ok &= stored == distinct

        # 2) redelivery of the whole stream (offsets lost): nothing new
        started = time.perf_counter()
        for i in range(0, len(deliveries), args.batch):
            await recorder.handle_batch(deliveries[i:i + args.batch])
        elapsed = time.perf_counter() - started
        again = await pool.fetchval("SELECT count(*) FROM usage_records WHERE job_id LIKE 'batch-%'") - stored
        print(f"  full replay: {len(deliveries):,} deliveries in {elapsed:.2f} s = "
              f"{len(deliveries) / elapsed:,.0f} events/s, newly recorded {again}")
        ok &= again == 0

        # 3) the single-record handler: one event, one statement (and one commit)
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
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--single-events", type=int, default=2_000)
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    random.seed(7)
    with postgres("billing-ingest") as dsn:
        return asyncio.run(run(dsn, args))


if __name__ == "__main__":
    sys.exit(main())
