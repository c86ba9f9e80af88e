"""Metering: usage.v1.recorded events become usage rows, exactly once by event id.

Usage never moves money. The orchestrator charges through the synchronous Settle call (the ledger's
only charge path, idempotent by job id); the usage event is the record of what happened (seconds,
provider, pool, provider cost, what was charged) for invoices' companions: CSV exports, margins and
reconciliation, which flags any job whose usage and ledger disagree. So a duplicate, late or missing
usage event can never charge twice or lose a charge; it can only show up in the reconciliation.

Dedupe key: the message's `event_id` (stable: the orchestrator derives it from the job), falling
back to the `event-id` header. The inbox row and the usage row are written in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from reelforge.usage.v1 import usage_pb2
from reelforge_billing.pricing import Rate, price_micros, seconds_of
from reelforge_core.kafka import Event, PoisonMessage

CONSUMER = "billing:usage"
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class UsageRow:
    event_id: str
    tenant_id: str
    job_id: str
    model: str
    width: int
    height: int
    seconds: Decimal
    provider: str
    pool: str
    provider_cost_micros: int
    charged_micros: int
    occurred_at: datetime


def from_message(message: usage_pb2.UsageRecorded, fallback_event_id: str) -> UsageRow:
    event_id = message.event_id or fallback_event_id
    if not event_id or not message.tenant_id or not message.job_id or not message.model:
        raise PoisonMessage("UsageRecorded without event_id, tenant_id, job_id or model")
    if not 0 <= message.seconds <= MAX_SECONDS or message.provider_cost_micros < 0 or message.charged_micros < 0:
        raise PoisonMessage("UsageRecorded with impossible seconds or amounts")
    occurred = message.at.ToDatetime(tzinfo=UTC) if message.HasField("at") else datetime.now(UTC)
    return UsageRow(
        event_id=event_id[:200], tenant_id=message.tenant_id, job_id=message.job_id, model=message.model,
        width=message.width, height=message.height, seconds=seconds_of(message.seconds),
        provider=message.provider, pool=message.pool or message.provider,
        provider_cost_micros=message.provider_cost_micros, charged_micros=message.charged_micros,
        occurred_at=occurred,
    )


_INSERT = """
INSERT INTO usage_records (event_id, tenant_id, job_id, model, width, height, seconds, provider, pool,
                           provider_cost_micros, provider_cost_source, charged_micros, occurred_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::numeric[],
                     $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[], $13::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""

_COST_CARD = """
SELECT DISTINCT ON (pool, model, max_pixels) pool, model, max_pixels, micros_per_second
FROM provider_costs WHERE effective_from <= now()
ORDER BY pool, model, max_pixels, effective_from DESC, id DESC
"""


class UsageRecorder:
    """Records usage rows in batches (the consumer hands it one event at a time; the bench, many)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, event: Event) -> None:
        """The Kafka handler for usage.v1.recorded."""
        await self.record([from_message(event.parse(usage_pb2.UsageRecorded), event.event_id)])

    async def record(self, rows: list[UsageRow]) -> int:
        """Records the rows not seen before (by event id); returns how many were new."""
        if not rows:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            fresh_ids = {
                r["event_id"]
                for r in await conn.fetch(
                    "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[])"
                    " ON CONFLICT DO NOTHING RETURNING event_id",
                    CONSUMER, list({row.event_id for row in rows}),
                )
            }
            fresh: dict[str, UsageRow] = {}
            for row in rows:
                if row.event_id in fresh_ids:
                    fresh.setdefault(row.event_id, row)
            if not fresh:
                return 0
            card = await self._cost_card(conn) if any(r.provider_cost_micros == 0 for r in fresh.values()) else {}
            costs = [self._cost(row, card) for row in fresh.values()]
            values = list(fresh.values())
            await conn.execute(
                _INSERT,
                [r.event_id for r in values], [r.tenant_id for r in values], [r.job_id for r in values],
                [r.model for r in values], [r.width for r in values], [r.height for r in values],
                [r.seconds for r in values], [r.provider for r in values], [r.pool for r in values],
                [c[0] for c in costs], [c[1] for c in costs], [r.charged_micros for r in values],
                [r.occurred_at for r in values],
            )
            return len(values)

    @staticmethod
    async def _cost_card(conn: asyncpg.Connection) -> dict[tuple[str, str], list[Rate]]:
        card: dict[tuple[str, str], list[Rate]] = {}
        for r in await conn.fetch(_COST_CARD):
            rate = Rate(r["model"], r["max_pixels"], r["micros_per_second"])
            card.setdefault((r["pool"], r["model"]), []).append(rate)
        return card

    @staticmethod
    def _cost(row: UsageRow, card: dict[tuple[str, str], list[Rate]]) -> tuple[int, str]:
        if row.provider_cost_micros > 0:
            return row.provider_cost_micros, "reported"
        rate = expected_cost_rate(card.get((row.pool, row.model), []), row.width, row.height)
        if rate is None:
            return 0, "unknown"
        return price_micros(rate, row.seconds), "card"


def expected_cost_rate(rates: list[Rate], width: int, height: int) -> Rate | None:
    pixels = width * height
    fitting = [r for r in rates if r.max_pixels >= pixels]
    return min(fitting, key=lambda r: r.max_pixels) if fitting else None
