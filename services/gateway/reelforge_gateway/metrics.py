"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOK_ATTEMPTS = Counter(
    "reelforge_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, retry (will be tried again) or dead (gave up)",
    ["outcome"],
)
