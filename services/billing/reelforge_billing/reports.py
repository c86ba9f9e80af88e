"""Reports read from the ledger and the usage rows: invoices, usage CSV, margins, budget alerts,
reconciliation. Months are calendar months in UTC ("YYYY-MM")."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from reelforge_billing import ledger
from reelforge_billing.pricing import Rate, price_micros

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_CSV_ROWS = 100_000


def month_bounds(month: str) -> tuple[datetime, datetime]:
    match = _MONTH.match(month)
    if not match:
        raise ValueError(f"month must be YYYY-MM, got {month!r}")
    year, mon = int(match.group(1)), int(match.group(2))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), 1 if mon == 12 else mon + 1, 1, tzinfo=UTC)
    return start, end


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def resolution(width: int, height: int) -> str:
    return f"{width}x{height}"


@dataclass(frozen=True)
class InvoiceLine:
    model: str
    resolution: str
    jobs: int
    seconds: Decimal
    charged: int
    free: int
    refunded: int
    amount: int


@dataclass(frozen=True)
class Invoice:
    tenant_id: str
    month: str
    lines: list[InvoiceLine]

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def free(self) -> int:
        return sum(line.free for line in self.lines)


_INVOICE = """
WITH tx AS (
    SELECT t.kind, r.model, r.width, r.height, r.settled_seconds,
           coalesce((SELECT sum(amount) FROM ledger_entries e WHERE e.transaction_id = t.id AND e.account_id = $4), 0)
               AS paid,
           coalesce((SELECT sum(amount) FROM ledger_entries e WHERE e.transaction_id = t.id AND e.account_id = $5), 0)
               AS free
    FROM ledger_transactions t JOIN reservations r ON r.job_id = t.job_id
    WHERE t.tenant_id = $1 AND t.kind IN ('settle', 'refund') AND t.created_at >= $2 AND t.created_at < $3
)
SELECT model, width, height,
       count(*) FILTER (WHERE kind = 'settle') AS jobs,
       coalesce(sum(settled_seconds) FILTER (WHERE kind = 'settle'), 0) AS seconds,
       coalesce(sum(paid + free) FILTER (WHERE kind = 'settle'), 0) AS charged,
       coalesce(sum(free) FILTER (WHERE kind = 'settle'), 0) AS free,
       coalesce(-sum(paid + free) FILTER (WHERE kind = 'refund'), 0) AS refunded,
       coalesce(sum(paid), 0) AS amount
FROM tx GROUP BY model, width, height ORDER BY model, width * height, width
"""


async def invoice(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, month: str) -> Invoice:
    """The tenant's charges (settlements) and refunds posted in `month`, by model and resolution."""
    start, end = month_bounds(month)
    rows = await conn.fetch(_INVOICE, tenant_id, start, end, ledger.REVENUE, ledger.FREE_USAGE)
    lines = [
        InvoiceLine(r["model"], resolution(r["width"], r["height"]), r["jobs"], r["seconds"], int(r["charged"]),
                    int(r["free"]), int(r["refunded"]), int(r["amount"]))
        for r in rows
    ]
    return Invoice(tenant_id, month, lines)


def _cell(value: object) -> str:
    """CSV cells that a spreadsheet would run as a formula get a leading quote."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def usage_csv(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, month: str | None) -> tuple[str, int]:
    """The tenant's metered usage as CSV (partner-facing: no provider costs). Returns (csv, rows)."""
    start, end = month_bounds(month) if month else (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))
    rows = await conn.fetch(
        "SELECT job_id, model, width, height, seconds, charged_micros, occurred_at FROM usage_records"
        " WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 ORDER BY occurred_at, job_id LIMIT $4",
        tenant_id, start, end, MAX_CSV_ROWS,
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["occurred_at", "job_id", "model", "resolution", "seconds", "charged_micros", "charged"])
    for r in rows:
        writer.writerow([
            r["occurred_at"].astimezone(UTC).isoformat(), _cell(r["job_id"]), _cell(r["model"]),
            resolution(r["width"], r["height"]), r["seconds"], r["charged_micros"],
            f"{Decimal(r['charged_micros']) / Decimal(1_000_000):.6f}",
        ])
    return out.getvalue(), len(rows)


GROUPINGS = ("model", "resolution", "day")

# A grouping that is off yields NULL for every row, so GROUP BY 1, 2, 3 groups by the chosen ones only.
_USAGE_SUMMARY = """
SELECT CASE WHEN $4 THEN model END AS model,
       CASE WHEN $5 THEN width::text || 'x' || height::text END AS resolution,
       CASE WHEN $6 THEN to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') END AS day,
       count(DISTINCT job_id) AS jobs, sum(seconds) AS seconds, sum(charged_micros) AS charged
FROM usage_records
WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class UsageRow:
    model: str
    resolution: str
    day: str
    jobs: int
    seconds: Decimal
    charged: int


async def usage_summary(
    conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, start: datetime, end: datetime,
    group_by: list[str],
) -> list[UsageRow]:
    """The tenant's metered usage in [start, end), summed by the chosen groupings (GROUPINGS)."""
    unknown = set(group_by) - set(GROUPINGS)
    if unknown:
        raise ValueError(f"group_by must be among {', '.join(GROUPINGS)}; got {', '.join(sorted(unknown))}")
    rows = await conn.fetch(_USAGE_SUMMARY, tenant_id, start, end, *(g in group_by for g in GROUPINGS))
    return [UsageRow(r["model"] or "", r["resolution"] or "", r["day"] or "", r["jobs"], r["seconds"],
                     int(r["charged"])) for r in rows]


async def invoice_months(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, limit: int) -> list[str]:
    """The months ("YYYY-MM", newest first) in which the tenant had charges or refunds."""
    rows = await conn.fetch(
        "SELECT DISTINCT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month FROM ledger_transactions"
        " WHERE tenant_id = $1 AND kind IN ('settle', 'refund') ORDER BY month DESC LIMIT $2",
        tenant_id, limit,
    )
    return [r["month"] for r in rows]


@dataclass(frozen=True)
class MarginLine:
    tenant_id: str
    model: str
    jobs: int
    seconds: Decimal
    price: int
    provider_cost: int

    @property
    def margin(self) -> int:
        return self.price - self.provider_cost


async def margins(
    conn: asyncpg.Connection | asyncpg.Pool, month: str, tenant_id: str | None = None
) -> list[MarginLine]:
    """Per tenant and model: what partners paid (net of refunds) minus what providers cost us."""
    start, end = month_bounds(month)
    rows = await conn.fetch(
        "SELECT u.tenant_id, u.model, count(*) AS jobs, sum(u.seconds) AS seconds,"
        " sum(u.charged_micros - coalesce(r.refunded_micros, 0)) AS price, sum(u.provider_cost_micros) AS cost"
        " FROM usage_records u LEFT JOIN reservations r ON r.job_id = u.job_id"
        " WHERE u.occurred_at >= $1 AND u.occurred_at < $2 AND ($3::text IS NULL OR u.tenant_id = $3)"
        " GROUP BY u.tenant_id, u.model ORDER BY u.tenant_id, u.model",
        start, end, tenant_id,
    )
    return [MarginLine(r["tenant_id"], r["model"], r["jobs"], r["seconds"], int(r["price"]), int(r["cost"]))
            for r in rows]


@dataclass(frozen=True)
class BudgetAlert:
    id: int
    tenant_id: str
    month: str
    threshold_pct: int
    spent: int
    budget: int


async def pending_alerts(
    conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str | None, limit: int
) -> list[BudgetAlert]:
    rows = await conn.fetch(
        "SELECT * FROM budget_alerts WHERE delivered_at IS NULL AND ($1::text IS NULL OR tenant_id = $1)"
        " ORDER BY id LIMIT $2",
        tenant_id, limit,
    )
    return [BudgetAlert(r["id"], r["tenant_id"], r["period"].strftime("%Y-%m"), r["threshold_pct"],
                        int(r["spent_micros"]), int(r["budget_micros"])) for r in rows]


async def ack_alerts(conn: asyncpg.Connection | asyncpg.Pool, ids: list[int]) -> int:
    done = await conn.fetch(
        "UPDATE budget_alerts SET delivered_at = now() WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL"
        " RETURNING id",
        ids,
    )
    return len(done)


@dataclass(frozen=True)
class Difference:
    job_id: str
    tenant_id: str
    kind: str
    recorded: int
    expected: int


@dataclass
class Reconciliation:
    month: str
    usage_records: int = 0
    settlements: int = 0
    differences: list[Difference] = field(default_factory=list)


_CHARGES = """
WITH settled AS (
    SELECT t.job_id, t.tenant_id, t.created_at, sum(e.amount) AS charged
    FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id
    WHERE t.kind = 'settle' AND e.account_id = ANY($3::text[]) AND t.created_at >= $1 AND t.created_at < $2
    GROUP BY t.job_id, t.tenant_id, t.created_at
), used AS (
    SELECT job_id, tenant_id, sum(charged_micros) AS charged
    FROM usage_records WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY job_id, tenant_id
)
SELECT coalesce(s.job_id, u.job_id) AS job_id, coalesce(s.tenant_id, u.tenant_id) AS tenant_id,
       s.charged AS ledger_charged, u.charged AS usage_charged, s.created_at AS settled_at
FROM settled s FULL JOIN used u ON u.job_id = s.job_id
WHERE s.job_id IS NULL OR u.job_id IS NULL OR s.charged <> u.charged
ORDER BY 1
"""

_COSTS = """
SELECT u.job_id, u.tenant_id, u.model, u.seconds, u.provider_cost_micros, u.provider_cost_source, c.micros_per_second
FROM usage_records u LEFT JOIN LATERAL (
    SELECT micros_per_second FROM provider_costs p
    WHERE p.pool = u.pool AND p.model = u.model AND p.max_pixels >= u.width * u.height
      AND p.effective_from <= u.occurred_at
    ORDER BY p.max_pixels, p.effective_from DESC, p.id DESC LIMIT 1
) c ON true
WHERE u.occurred_at >= $1 AND u.occurred_at < $2 AND u.provider_cost_source <> 'card'
ORDER BY u.job_id
"""


async def reconcile(
    conn: asyncpg.Connection | asyncpg.Pool, month: str, grace_seconds: float = 300.0
) -> Reconciliation:
    """Usage rows against ledger settlements (charges) and against the provider cost card (costs).

    A settlement younger than `grace_seconds` may still be waiting for its usage event; it is not
    reported as missing usage yet.
    """
    start, end = month_bounds(month)
    report = Reconciliation(month)
    report.usage_records = await conn.fetchval(
        "SELECT count(*) FROM usage_records WHERE occurred_at >= $1 AND occurred_at < $2", start, end
    )
    report.settlements = await conn.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE kind = 'settle' AND created_at >= $1 AND created_at < $2",
        start, end,
    )
    now = datetime.now(UTC)
    for r in await conn.fetch(_CHARGES, start, end, [ledger.REVENUE, ledger.FREE_USAGE]):
        if r["usage_charged"] is None:
            if (now - r["settled_at"]).total_seconds() >= grace_seconds:
                report.differences.append(
                    Difference(r["job_id"], r["tenant_id"], "settlement_without_usage", 0, int(r["ledger_charged"]))
                )
        elif r["ledger_charged"] is None:
            report.differences.append(
                Difference(r["job_id"], r["tenant_id"], "usage_without_settlement", int(r["usage_charged"]), 0)
            )
        else:
            report.differences.append(
                Difference(r["job_id"], r["tenant_id"], "charge_mismatch", int(r["usage_charged"]),
                           int(r["ledger_charged"]))
            )
    for r in await conn.fetch(_COSTS, start, end):
        recorded = int(r["provider_cost_micros"])
        if r["micros_per_second"] is None:
            report.differences.append(Difference(r["job_id"], r["tenant_id"], "provider_cost_unknown", recorded, 0))
            continue
        expected = price_micros(Rate(r["model"], 0, int(r["micros_per_second"])), r["seconds"])
        if recorded != expected:
            report.differences.append(
                Difference(r["job_id"], r["tenant_id"], "provider_cost_mismatch", recorded, expected)
            )
    return report
