"""`python -m reelforge_gateway [serve]` runs the gateway; `create-tenant NAME` makes a tenant and prints a key;
`create-admin-key` prints a key with the `admin` scope, the way to reach the admin API the first time."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

import asyncpg

from reelforge_core import db, ops, topics
from reelforge_core.content import open_content_store
from reelforge_core.service import ServiceRuntime, run_service
from reelforge_gateway import grpc_api, http_workers, qc_reports, secret_box, store, tenancy, webhooks
from reelforge_gateway.api.app import create_app
from reelforge_gateway.budget_alerts import BudgetAlertConsumer
from reelforge_gateway.secret_box import SecretBox
from reelforge_gateway.settings import GatewaySettings
from reelforge_gateway.status_consumer import StatusConsumer

log = logging.getLogger(__name__)

SCHEMA = "gateway"
MIGRATIONS = Path(__file__).parent / "migrations"


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, GatewaySettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS)
    if settings.http_workers > 1:
        settings = http_workers.with_shared_secret(settings)
        runtime.http_socket = ops.shared_listener(settings.http_host, settings.http_port)
        workers = http_workers.Workers.start(settings, runtime.http_socket.getsockname()[1],
                                             settings.http_workers - 1)
        runtime.on_close(workers.stop)
        runtime.add_task("http-workers", workers.supervise)
    app = runtime.http_app = create_app(pool, open_content_store(settings), settings)
    box: SecretBox = app.state.secret_box
    if box.seals:
        if resealed := await secret_box.reseal_all(pool, box):
            log.info("webhook signing secrets sealed under the first key", extra={"endpoints": resealed})
    else:
        log.warning("webhook signing secrets are stored unsealed: set REELFORGE_GATEWAY_WEBHOOK_SECRET_KEYS")
    runtime.on_close(app.state.group_commit.close)
    app.state.notifications.start()
    runtime.on_close(app.state.notifications.close)
    await runtime.consume("gateway", [topics.JOBS_STATUS], StatusConsumer(pool).handle)
    await runtime.consume(qc_reports.CONSUMER_GROUP, [topics.POSTPROCESS_RESULT],
                          qc_reports.QcReportConsumer(pool).handle)
    await grpc_api.serve(runtime, app.state, settings.grpc_host, settings.grpc_port)
    runtime.add_task("rate-bucket-expiry", lambda: tenancy.forget_idle_rate_buckets(pool))
    runtime.on_close(app.state.provider_webhook_client.aclose)
    if runtime.http_app.state.billing is not None:
        runtime.on_close(runtime.http_app.state.billing.close)
    if settings.consume_budget_alerts:
        await runtime.consume("gateway-budget-alerts", [topics.BILLING_BUDGET_ALERT],
                              BudgetAlertConsumer(pool).handle)

    runtime.add_task("idempotency-expiry", lambda: db.expire_forever(
        "idempotency keys", lambda: store.forget_idempotency_keys(pool, settings.idempotency_ttl_hours)))
    runtime.add_task("webhook-delivery", lambda: deliver_webhooks(pool, settings, box))


async def deliver_webhooks(pool: asyncpg.Pool, settings: GatewaySettings, box: SecretBox) -> None:
    backoff = webhooks.Backoff(settings.webhook_backoff_base_seconds, settings.webhook_backoff_max_seconds,
                               settings.webhook_max_attempts)
    guard = webhooks.url_guard(settings.webhook_allowed_hosts)
    async with webhooks.delivery_client(guard, settings.webhook_timeout_seconds) as client:
        while True:
            try:
                sent = await webhooks.deliver_due(pool, client, backoff, box)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("webhook delivery pass failed; will retry", extra={"error": str(exc)})
                sent = 0
            if not sent:
                await asyncio.sleep(settings.webhook_poll_seconds)


async def create_tenant(settings: GatewaySettings, name: str) -> dict[str, str]:
    pool = await db.create_pool(settings.database_url.get_secret_value(), SCHEMA, 2)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        tenant_id, key = await store.create_tenant(pool, name)
    finally:
        await pool.close()
    return {"tenant_id": tenant_id, "api_key": key.plaintext}


async def create_admin_key(settings: GatewaySettings, tenant_name: str) -> dict[str, str]:
    """The first admin key (bootstrap): an `admin`-scoped key of the operators' tenant, made if missing."""
    pool = await db.create_pool(settings.database_url.get_secret_value(), SCHEMA, 2)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        tenant_id, key_id, key = await tenancy.bootstrap_admin_key(pool, tenant_name)
    finally:
        await pool.close()
    return {"tenant_id": tenant_id, "key_id": key_id, "api_key": key.plaintext}


def main() -> None:
    parser = argparse.ArgumentParser(prog="reelforge-gateway")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (default)")
    tenant_cmd = sub.add_parser("create-tenant", help="create a tenant (or reuse one by name) and print a new key")
    tenant_cmd.add_argument("name")
    admin_cmd = sub.add_parser("create-admin-key", help="print a new admin-scoped key (for the admin API)")
    admin_cmd.add_argument("--tenant", default="platform", help="the operators' tenant (made if missing)")
    args = parser.parse_args()
    settings = GatewaySettings()
    if args.command == "create-tenant":
        print(json.dumps(asyncio.run(create_tenant(settings, args.name))))
    elif args.command == "create-admin-key":
        print(json.dumps(asyncio.run(create_admin_key(settings, args.tenant))))
    else:
        run_service(settings, start)


if __name__ == "__main__":
    main()
