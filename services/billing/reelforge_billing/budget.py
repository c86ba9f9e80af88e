"""Budget alerts: when a tenant's paid spend this month (UTC) crosses 80% or 100% of its monthly
budget, one alert row per threshold and month, written in the same transaction as the charge.
Each new alert is also published (outbox, same transaction) on billing.v1.budget-alert, which the
gateway delivers to the tenant's webhook endpoints; ListBudgetAlerts/AckBudgetAlerts remain for pulling."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.billing.v1 import billing_pb2
from reelforge_billing import ledger
from reelforge_core import outbox, topics

THRESHOLDS = (80, 100)

MONTH_SPEND = """
SELECT coalesce(sum(e.amount), 0)
FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id
WHERE t.tenant_id = $1 AND e.account_id = $2
  AND t.created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
"""


def crossed(spent: int, budget: int) -> list[int]:
    """The thresholds (percent) that `spent` has reached against `budget`."""
    return [pct for pct in THRESHOLDS if spent * 100 >= budget * pct]


async def check(conn: asyncpg.Connection, tenant_id: str, currency: str = "USD") -> list[int]:
    """Records the alerts this tenant has newly reached; returns their thresholds."""
    budget = await conn.fetchval(
        "SELECT monthly_budget_micros FROM billing_profiles WHERE tenant_id = $1", tenant_id
    )
    if budget is None:
        return []
    spent = int(await conn.fetchval(MONTH_SPEND, tenant_id, ledger.REVENUE))
    new = []
    for pct in crossed(spent, int(budget)):
        alert = await conn.fetchrow(
            "INSERT INTO budget_alerts (tenant_id, period, threshold_pct, spent_micros, budget_micros)"
            " VALUES ($1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, $2, $3, $4)"
            " ON CONFLICT DO NOTHING RETURNING id, period, created_at",
            tenant_id, pct, spent, budget,
        )
        if alert:
            new.append(pct)
            await outbox.enqueue(conn, topics.BILLING_BUDGET_ALERT, tenant_id, raised(
                alert["id"], tenant_id, alert["period"].strftime("%Y-%m"), pct, spent, int(budget), currency,
                alert["created_at"],
            ), tenant_id=tenant_id)
    return new


def raised(
    alert_id: int, tenant_id: str, month: str, pct: int, spent: int, budget: int, currency: str, at: datetime
) -> billing_pb2.BudgetAlertRaised:
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return billing_pb2.BudgetAlertRaised(
        alert_id=alert_id, tenant_id=tenant_id, month=month, threshold_pct=pct, spent_micros=spent,
        budget_micros=budget, currency=currency, at=stamp,
    )
