"""`python -m reelforge_billing [serve]` runs the service; `grant TENANT USD` adds credit to a tenant."""

from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal
from pathlib import Path

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_billing.grpc_api import BillingServicer
from reelforge_billing.settings import BillingSettings
from reelforge_billing.store import LedgerStore
from reelforge_core import db
from reelforge_core import grpc as core_grpc
from reelforge_core.service import ServiceRuntime, run_service

SCHEMA = "billing"
MIGRATIONS = Path(__file__).parent / "migrations"


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, BillingSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS, outbox=False)
    server, _ = core_grpc.create_server([billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name])
    billing_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(LedgerStore(pool), settings.currency), server)
    server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    runtime.on_close(lambda: server.stop(grace=5))


async def grant(settings: BillingSettings, tenant_id: str, usd: Decimal) -> None:
    pool = await db.create_pool(settings.database_url.get_secret_value(), SCHEMA, 2)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        await LedgerStore(pool).grant(tenant_id, int(usd * 1_000_000))
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="reelforge-billing")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the billing service (default)")
    grant_cmd = sub.add_parser("grant", help="grant credit to a tenant")
    grant_cmd.add_argument("tenant_id")
    grant_cmd.add_argument("usd", type=Decimal)
    args = parser.parse_args()
    settings = BillingSettings()
    if args.command == "grant":
        asyncio.run(grant(settings, args.tenant_id, args.usd))
        print(f"granted {args.usd} USD to {args.tenant_id}")
    else:
        run_service(settings, start)


if __name__ == "__main__":
    main()
