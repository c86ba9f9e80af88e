"""Budget alerts from billing (billing.v1.budget-alert) become `billing.budget_alert` webhooks.

Each alert is written as one durable delivery per subscribed endpoint (then sent, signed and retried by
the webhook worker). A delivery's id is derived from tenant, month, threshold and endpoint, so a
re-published event, a redelivered record or a second gateway instance can never add a second one:
exactly one webhook per threshold per period per endpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging

import asyncpg

from reelforge.billing.v1 import billing_pb2
from reelforge_core.kafka import Event, PoisonMessage

log = logging.getLogger(__name__)

EVENT_TYPE = "billing.budget_alert"


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def payload(alert: billing_pb2.BudgetAlertRaised) -> dict[str, object]:
    return {
        "id": f"evt_{_digest(alert.tenant_id, alert.month, alert.threshold_pct)}",
        "type": EVENT_TYPE,
        "created_at": alert.at.seconds,
        "data": {"period": alert.month, "threshold_pct": alert.threshold_pct, "spent_micros": alert.spent_micros,
                 "budget_micros": alert.budget_micros, "currency": alert.currency},
    }


async def enqueue(conn: asyncpg.Connection, alert: billing_pb2.BudgetAlertRaised) -> int:
    """One pending delivery per endpoint of the tenant subscribed to budget alerts; returns how many were new."""
    endpoints = await conn.fetch(
        "SELECT endpoint_id FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL AND $2 = ANY(events)",
        alert.tenant_id, EVENT_TYPE,
    )
    body = json.dumps(payload(alert))
    added = 0
    for endpoint in endpoints:
        delivery_id = f"msg_{_digest(alert.tenant_id, alert.month, alert.threshold_pct, endpoint['endpoint_id'])}"
        added += bool(await conn.fetchval(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, tenant_id, event_type, payload)"
            " VALUES ($1, $2, $3, $4, $5::json) ON CONFLICT (delivery_id) DO NOTHING RETURNING true",
            delivery_id, endpoint["endpoint_id"], alert.tenant_id, EVENT_TYPE, body,
        ))
    return added


class BudgetAlertConsumer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, event: Event) -> None:
        alert = event.parse(billing_pb2.BudgetAlertRaised)
        if not alert.tenant_id or not alert.month or alert.threshold_pct not in (80, 100):
            raise PoisonMessage("BudgetAlertRaised without tenant, month or a known threshold")
        async with self._pool.acquire() as conn, conn.transaction():
            added = await enqueue(conn, alert)
        log.info("budget alert queued for webhooks", extra={"tenant_id": alert.tenant_id, "month": alert.month,
                                                             "threshold_pct": alert.threshold_pct, "deliveries": added})
