"""`python -m reelforge_billing [serve]` runs the service; other commands administer billing:
`grant TENANT USD` (prepaid credit), `free-grant TENANT --seconds N | --usd N [--expires ISO]`,
`profile TENANT [--plan P] [--postpaid --credit-limit USD] [--budget USD]`,
`price MODEL MAX_PIXELS USD_PER_SECOND (--plan P | --tenant T) [--from ISO]`,
`provider-cost POOL MODEL MAX_PIXELS USD_PER_SECOND`, `reconcile YYYY-MM`, `invoice TENANT YYYY-MM`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from reelforge_billing import ledger_totals, reports
from reelforge_billing.grpc_api import start_server
from reelforge_billing.settings import BillingSettings
from reelforge_billing.store import LedgerStore, Mode
from reelforge_billing.usage import UsageRecorder
from reelforge_core import db, topics
from reelforge_core.service import ServiceRuntime, run_service

SCHEMA = "billing"
MIGRATIONS = Path(__file__).parent / "migrations"
CONSUMER_GROUP = "billing"

log = logging.getLogger(__name__)


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, BillingSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS, outbox=settings.publish_events)
    store = LedgerStore(pool, settings.group_commit, settings.group_commit_in_flight)
    server, _ = await start_server(
        store, settings.currency, settings.grpc_host, settings.grpc_port, settings.reconcile_grace_seconds,
        settings.operator_token,
    )
    runtime.on_close(lambda: server.stop(grace=5))
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
    # which otherwise walk every module's objects again and again under a stream of short-lived calls.
    gc.freeze()
    if settings.consume_usage:
        recorder = UsageRecorder(pool)
        await runtime.consume(
            CONSUMER_GROUP, [topics.USAGE_RECORDED], recorder.handle, batch_handler=recorder.handle_batch
        )
    if settings.ledger_totals_seconds > 0:
        runtime.add_task("ledger-totals", lambda: ledger_totals.keep_folding(pool, settings.ledger_totals_seconds))
    if settings.reconcile_interval_seconds > 0:
        runtime.add_task("reconcile", lambda: reconcile_forever(pool, settings))


async def reconcile_forever(pool: asyncpg.Pool, settings: BillingSettings) -> None:
    """Logs every difference between usage and the ledger for the current month, periodically."""
    while True:
        await asyncio.sleep(settings.reconcile_interval_seconds)
        try:
            report = await reports.reconcile(pool, reports.current_month(), settings.reconcile_grace_seconds)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("reconciliation failed; will retry", extra={"error": str(exc)})
            continue
        for difference in report.differences:
            log.warning("reconciliation difference", extra=dataclasses.asdict(difference))
        log.info("reconciliation done", extra={"month": report.month, "differences": len(report.differences),
                                               "usage_records": report.usage_records,
                                               "settlements": report.settlements})


def _micros(usd: Decimal) -> int:
    return int(usd * 1_000_000)


async def _with_store(settings: BillingSettings, action: Callable[[LedgerStore], Awaitable[Any]]) -> Any:
    pool = await db.create_pool(settings.database_url.get_secret_value(), SCHEMA, 2)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        return await action(LedgerStore(pool))
    finally:
        await pool.close()


async def grant(settings: BillingSettings, tenant_id: str, usd: Decimal) -> None:
    await _with_store(settings, lambda store: store.grant(tenant_id, _micros(usd)))


def _admin(args: argparse.Namespace) -> Callable[[LedgerStore], Awaitable[Any]]:
    expires = datetime.fromisoformat(args.expires) if getattr(args, "expires", None) else None
    effective = datetime.fromisoformat(args.effective_from) if getattr(args, "effective_from", None) else None
    if args.command == "free-grant":
        if args.seconds is not None:
            return lambda s: s.add_free_grant(args.tenant_id, "seconds", args.seconds, expires)
        return lambda s: s.add_free_grant(args.tenant_id, "micros", Decimal(_micros(args.usd)), expires)
    if args.command == "profile":
        budget = _micros(args.budget) if args.budget is not None else None
        mode: Mode = "postpaid" if args.postpaid else "prepaid"
        return lambda s: s.set_profile(args.tenant_id, args.plan, mode, _micros(args.credit_limit), budget)
    if args.command == "price":
        return lambda s: s.set_price(args.model, args.max_pixels, _micros(args.usd_per_second), plan_id=args.plan,
                                     tenant_id=args.tenant, effective_from=effective)
    if args.command == "provider-cost":
        return lambda s: s.set_provider_cost(args.pool, args.model, args.max_pixels, _micros(args.usd_per_second),
                                             effective)
    if args.command == "reconcile":
        return lambda s: reports.reconcile(s.pool, args.month, 0)
    if args.command == "invoice":
        return lambda s: reports.invoice(s.pool, args.tenant_id, args.month)
    raise SystemExit(f"unknown command {args.command}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reelforge-billing")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the billing service (default)")
    grant_cmd = sub.add_parser("grant", help="add prepaid credit to a tenant")
    grant_cmd.add_argument("tenant_id")
    grant_cmd.add_argument("usd", type=Decimal)
    free = sub.add_parser("free-grant", help="give a tenant free seconds or money, used before its credit")
    free.add_argument("tenant_id")
    amount = free.add_mutually_exclusive_group(required=True)
    amount.add_argument("--seconds", type=Decimal)
    amount.add_argument("--usd", type=Decimal)
    free.add_argument("--expires", help="ISO 8601 time with offset")
    profile = sub.add_parser("profile", help="set a tenant's plan, prepaid/postpaid and budget")
    profile.add_argument("tenant_id")
    profile.add_argument("--plan", default="default")
    profile.add_argument("--postpaid", action="store_true")
    profile.add_argument("--credit-limit", type=Decimal, default=Decimal(0))
    profile.add_argument("--budget", type=Decimal, help="monthly budget in USD (alerts at 80%% and 100%%)")
    price = sub.add_parser("price", help="add a partner price per second for a plan or a tenant")
    price.add_argument("model")
    price.add_argument("max_pixels", type=int)
    price.add_argument("usd_per_second", type=Decimal)
    owner = price.add_mutually_exclusive_group(required=True)
    owner.add_argument("--plan")
    owner.add_argument("--tenant")
    price.add_argument("--from", dest="effective_from")
    cost = sub.add_parser("provider-cost", help="add what a pool costs per output second")
    cost.add_argument("pool")
    cost.add_argument("model")
    cost.add_argument("max_pixels", type=int)
    cost.add_argument("usd_per_second", type=Decimal)
    cost.add_argument("--from", dest="effective_from")
    rec = sub.add_parser("reconcile", help="compare usage with the ledger for a month")
    rec.add_argument("month")
    inv = sub.add_parser("invoice", help="a tenant's invoice for a month")
    inv.add_argument("tenant_id")
    inv.add_argument("month")
    return parser


def main() -> None:
    args = _parser().parse_args()
    settings = BillingSettings()
    if args.command == "grant":
        asyncio.run(grant(settings, args.tenant_id, args.usd))
        print(f"granted {args.usd} USD to {args.tenant_id}")
    elif args.command in (None, "serve"):
        run_service(settings, start)
    else:
        result = asyncio.run(_with_store(settings, _admin(args)))
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            print(json.dumps(dataclasses.asdict(result), default=str, indent=2))
        elif result is not None:
            print(result)


if __name__ == "__main__":
    main()
