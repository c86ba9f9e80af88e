"""Budget alerts: when a tenant's paid spend this month (UTC) crosses 80% or 100% of its monthly
budget, one alert row per threshold and month, written in the same transaction as the charge.
The gateway's webhooks deliver them (ListBudgetAlerts, then mark delivered)."""

from __future__ import annotations

import asyncpg

from reelforge_billing import ledger

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


async def check(conn: asyncpg.Connection, tenant_id: str) -> list[int]:
    """Records the alerts this tenant has newly reached; returns their thresholds."""
    budget = await conn.fetchval(
        "SELECT monthly_budget_micros FROM billing_profiles WHERE tenant_id = $1", tenant_id
    )
    if budget is None:
        return []
    spent = int(await conn.fetchval(MONTH_SPEND, tenant_id, ledger.REVENUE))
    new = []
    for pct in crossed(spent, int(budget)):
        inserted = await conn.fetchval(
            "INSERT INTO budget_alerts (tenant_id, period, threshold_pct, spent_micros, budget_micros)"
            " VALUES ($1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, $2, $3, $4)"
            " ON CONFLICT DO NOTHING RETURNING true",
            tenant_id, pct, spent, budget,
        )
        if inserted:
            new.append(pct)
    return new
