"""Spend for one UTC day across tenants (the operators' console): charges from the ledger,
provider cost from metered usage; served as `reelforge.billing.v1.SpendService`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import grpc

from reelforge.billing.v1 import spend_pb2, spend_pb2_grpc
from reelforge_billing import ledger

SERVICE_NAME = spend_pb2.DESCRIPTOR.services_by_name["SpendService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class TenantSpend:
    tenant_id: str
    jobs: int
    charged: int
    free: int
    provider_cost: int


_SPEND = """
WITH per_transaction AS (
    SELECT t.tenant_id, t.kind, sum(e.amount) AS charged, sum(e.amount) FILTER (WHERE e.account_id = $4) AS free
    FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id AND e.account_id = ANY($3::text[])
    WHERE t.kind IN ('settle', 'refund') AND t.created_at >= $1 AND t.created_at < $2
      AND ($5::text IS NULL OR t.tenant_id = $5)
    GROUP BY t.id, t.tenant_id, t.kind
), charges AS (
    SELECT tenant_id, count(*) FILTER (WHERE kind = 'settle') AS jobs, sum(charged) AS charged,
           coalesce(sum(free), 0) AS free
    FROM per_transaction GROUP BY tenant_id
), costs AS (
    SELECT tenant_id, sum(provider_cost_micros) AS provider_cost
    FROM usage_records
    WHERE occurred_at >= $1 AND occurred_at < $2 AND ($5::text IS NULL OR tenant_id = $5)
    GROUP BY tenant_id
)
SELECT coalesce(c.tenant_id, u.tenant_id) AS tenant_id, coalesce(c.jobs, 0) AS jobs,
       coalesce(c.charged, 0) AS charged, coalesce(c.free, 0) AS free, coalesce(u.provider_cost, 0) AS provider_cost
FROM charges c FULL JOIN costs u ON u.tenant_id = c.tenant_id
ORDER BY 3 DESC, 1
"""


def parse_day(day: str) -> date:
    """`YYYY-MM-DD`, or today (UTC) when empty."""
    if not day:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"day must be YYYY-MM-DD, got {day[:40]!r}") from None


async def spend(conn: asyncpg.Connection | asyncpg.Pool, day: date, tenant_id: str | None = None) -> list[TenantSpend]:
    """Per tenant, for `day` (UTC): settlements net of refunds (revenue and free-usage postings)
    and the provider cost of the usage metered that day."""
    start = datetime.combine(day, time(), UTC)
    rows = await conn.fetch(_SPEND, start, start + timedelta(days=1), [ledger.REVENUE, ledger.FREE_USAGE],
                            ledger.FREE_USAGE, tenant_id)
    return [TenantSpend(r["tenant_id"], r["jobs"], int(r["charged"]), int(r["free"]), int(r["provider_cost"]))
            for r in rows]


class SpendServicer(spend_pb2_grpc.SpendServiceServicer):
    def __init__(self, pool: asyncpg.Pool, currency: str) -> None:
        self._pool = pool
        self._currency = currency

    async def GetSpend(self, request: spend_pb2.GetSpendRequest, context: Context) -> spend_pb2.GetSpendResponse:
        try:
            day = parse_day(request.day)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        lines = await spend(self._pool, day, request.tenant_id or None)
        return spend_pb2.GetSpendResponse(
            day=day.isoformat(), currency=self._currency,
            tenants=[spend_pb2.TenantSpend(tenant_id=s.tenant_id, jobs=s.jobs, charged_micros=s.charged,
                                           free_micros=s.free, provider_cost_micros=s.provider_cost)
                     for s in lines],
            charged_micros=sum(s.charged for s in lines), free_micros=sum(s.free for s in lines),
            provider_cost_micros=sum(s.provider_cost for s in lines),
        )
