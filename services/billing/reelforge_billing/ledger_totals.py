"""Ledger totals as Prometheus series, per account kind and currency.

A background task folds newly finished ledger transactions into `ledger_totals` (see the migration
0070: incremental and exact, no shared row on the Reserve/Settle path) and keeps a copy of those few
rows for the scrape, which then costs nothing. Every billing instance exposes the same totals: read
them with `max by (account_kind, currency)`, not `sum`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from reelforge_core.metrics import BoundedLabel

log = logging.getLogger(__name__)

currency_label = BoundedLabel(20)


@dataclass(frozen=True)
class Total:
    account_kind: str
    currency: str
    in_micros: int
    out_micros: int
    entries: int

    @property
    def balance_micros(self) -> int:
        return self.in_micros - self.out_micros


async def fold(pool: asyncpg.Pool) -> list[Total]:
    """Folds what finished since the last fold; returns every total."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT fold_ledger_totals()")
        rows = await conn.fetch(
            "SELECT account_kind, currency, in_micros, out_micros, entries FROM ledger_totals ORDER BY 1, 2")
    return [Total(r["account_kind"], r["currency"], int(r["in_micros"]), int(r["out_micros"]), r["entries"])
            for r in rows]


class LedgerTotalsCollector(Collector):
    def __init__(self) -> None:
        self.totals: list[Total] = []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["account_kind", "currency"]
        posted = CounterMetricFamily(
            "reelforge_ledger_posted_micros", "Amounts posted to ledger accounts since the ledger began, by account "
            "kind, currency and direction (in: the account grew; out: it shrank)", labels=[*labels, "direction"])
        balance = GaugeMetricFamily(
            "reelforge_ledger_balance_micros", "Sum of the balances of the accounts of a kind (revenue: earned; "
            "tenant_reserved: held for running jobs; tenant_available: tenants' credit)", labels=labels)
        entries = CounterMetricFamily(
            "reelforge_ledger_entries", "Ledger entries posted, by account kind and currency", labels=labels)
        for total in self.totals:
            currency = currency_label(total.currency)
            posted.add_metric([total.account_kind, currency, "in"], total.in_micros)
            posted.add_metric([total.account_kind, currency, "out"], total.out_micros)
            balance.add_metric([total.account_kind, currency], total.balance_micros)
            entries.add_metric([total.account_kind, currency], total.entries)
        yield posted
        yield balance
        yield entries


COLLECTOR = LedgerTotalsCollector()
REGISTRY.register(COLLECTOR)


async def keep_folding(pool: asyncpg.Pool, interval_seconds: float) -> None:
    while True:
        try:
            COLLECTOR.totals = await fold(pool)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("ledger totals not folded; will retry", extra={"error": str(exc)})
        await asyncio.sleep(interval_seconds)
