"""A poison record on every consumed topic lands in that group's dead-letter topic with its reason,
and every consumer keeps going: a job submitted afterwards completes and is metered."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from reelforge_core import topics
from reelforge_local.stack import Stack
from tests.e2e.helpers import submit, wait_for, wait_for_usage_rows

CONSUMED = {
    "gateway": [topics.JOBS_STATUS],
    "gateway-qc": [topics.POSTPROCESS_RESULT],
    "gateway-budget-alerts": [topics.BILLING_BUDGET_ALERT],
    "orchestrator": [topics.JOBS_SUBMITTED, topics.JOBS_CANCEL_REQUESTED, topics.RENDER_RESULT,
                     topics.POSTPROCESS_RESULT],
    "render-adapter": [topics.RENDER_REQUESTED, topics.RENDER_CANCEL_REQUESTED, topics.RENDER_PROVIDER_EVENT],
    "postprocess": [topics.POSTPROCESS_REQUESTED],
    "billing": [topics.USAGE_RECORDED],
}
# Field 1 with wire type 7 does not exist: no protobuf message decodes it.
UNDECODABLE = b"\x0f\xff\xff\xff"


async def _send_poison(bootstrap: str, marker: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for group, consumed in CONSUMED.items():
            for topic in consumed:
                await producer.send_and_wait(
                    topic, UNDECODABLE, key=f"poison-{group}".encode(),
                    headers=[("event-id", f"{marker}-{topic}".encode()), ("poison-marker", marker.encode())],
                )
    finally:
        await producer.stop()


async def _dead_lettered(bootstrap: str, marker: str, expected: int, wait_seconds: float) -> dict[str, dict[str, str]]:
    """Reads every dead-letter topic from the start; returns {event-id: headers} of our poison records."""
    consumer = AIOKafkaConsumer(
        *(topics.dead_letter_topic(group) for group in CONSUMED), bootstrap_servers=bootstrap,
        group_id=f"poison-check-{marker}", auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, dict[str, str]] = {}
    try:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline and len(found) < expected:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers or []}
                    if headers.get("poison-marker") == marker:
                        found[f"{record.topic}|{headers['event-id']}"] = headers
    finally:
        await consumer.stop()
    return found


def test_poison_on_every_topic_is_dead_lettered_and_consumers_keep_going(stack: Stack, api: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    asyncio.run(_send_poison(stack.bootstrap, marker))
    expected = sum(len(consumed) for consumed in CONSUMED.values())
    found = asyncio.run(_dead_lettered(stack.bootstrap, marker, expected, wait_seconds=60))

    for group, consumed in CONSUMED.items():
        for topic in consumed:
            key = f"{topics.dead_letter_topic(group)}|{marker}-{topic}"
            assert key in found, f"{group} did not dead-letter the poison record from {topic}"
            headers = found[key]
            assert "not a valid" in headers["dlq-reason"], headers
            assert headers["dlq-source"].startswith(f"{topic}/"), headers

    job = submit(api, prompt="A paper boat on a pond.", seconds=2, size="640x360", seed=11)
    done = wait_for(api, job["id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert len(wait_for_usage_rows(stack, job["id"], timeout=30)) == 1, "billing stopped consuming after the poison"
