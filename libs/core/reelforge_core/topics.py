"""Every Kafka topic, in one place. See proto/README.md for keys, payloads and owners."""

from __future__ import annotations

JOBS_SUBMITTED = "jobs.v1.submitted"
JOBS_STATUS = "jobs.v1.status"
RENDER_REQUESTED = "render.v1.requested"
RENDER_RESULT = "render.v1.result"
POSTPROCESS_REQUESTED = "postprocess.v1.requested"
POSTPROCESS_RESULT = "postprocess.v1.result"
JOBS_CANCEL_REQUESTED = "jobs.v1.cancel-requested"
RENDER_CANCEL_REQUESTED = "render.v1.cancel-requested"
USAGE_RECORDED = "usage.v1.recorded"
BILLING_BUDGET_ALERT = "billing.v1.budget-alert"
RENDER_PROVIDER_EVENT = "render.v1.provider-event"

ALL = [
    JOBS_SUBMITTED, JOBS_STATUS, JOBS_CANCEL_REQUESTED, RENDER_REQUESTED, RENDER_RESULT, RENDER_CANCEL_REQUESTED,
    POSTPROCESS_REQUESTED, POSTPROCESS_RESULT, USAGE_RECORDED, BILLING_BUDGET_ALERT, RENDER_PROVIDER_EVENT,
]

CONSUMER_GROUPS = [
    "gateway", "gateway-qc", "gateway-budget-alerts", "orchestrator", "render-adapter", "postprocess", "billing",
]


def dead_letter_topic(group: str) -> str:
    return f"dlq.v1.{group}"


def all_topics() -> list[str]:
    return ALL + [dead_letter_topic(group) for group in CONSUMER_GROUPS]
