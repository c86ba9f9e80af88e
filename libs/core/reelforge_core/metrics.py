"""Prometheus metrics the shared plumbing records. Services add their own next to their code."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "reelforge_events_consumed_total",
    "Kafka records handled, by consumer group, topic and outcome (ok, retry, dead_letter)",
    ["group", "topic", "outcome"],
)
EVENT_HANDLER_SECONDS = Histogram(
    "reelforge_event_handler_seconds",
    "Time to handle one Kafka record, retries included",
    ["group", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OUTBOX_PUBLISHED = Counter("reelforge_outbox_published_total", "Outbox rows published to Kafka", ["topic"])
OUTBOX_BACKLOG = Gauge("reelforge_outbox_backlog", "Outbox rows not yet published (sampled by the relay)")
OUTBOX_PUBLISH_FAILURES = Counter("reelforge_outbox_publish_failures_total", "Outbox batches that failed")
CONSUMER_LAG = Gauge(
    "reelforge_consumer_lag",
    "Records not yet handled, per consumer group and topic (high watermark minus position)",
    ["group", "topic"],
)

OTHER = "other"


class BoundedLabel:
    """Lets the first `limit` distinct values of a label through and maps later ones to "other",
    so a runaway input (a new tenant per request, an unknown provider code) cannot grow the series
    without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        value = value or "none"
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value
