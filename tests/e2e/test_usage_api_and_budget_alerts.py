"""Billing through the gateway end to end: a completed job appears in GET /v1/usage and in its month's
invoice, and crossing 80% then 100% of the monthly budget delivers one signed `billing.budget_alert`
webhook per threshold (verified with the `standardwebhooks` package)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_local.stack import Stack, Tenant
from services.gateway.tests.test_webhooks import Receiver
from tests.e2e.helpers import submit, wait_for

# animatic at 640x360 costs 10,000 micros per second on the default plan: a 2 s job is 20,000.
BUDGET_MICROS = 25_000


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def set_budget(stack: Stack, tenant_id: str, micros: int) -> None:
    async def call() -> None:
        port = stack.services["billing"].env["REELFORGE_BILLING_GRPC_PORT"]
        channel = core_grpc.channel(f"127.0.0.1:{port}", operator_token=stack.operator_token)
        try:
            admin = billing_pb2_grpc.BillingAdminServiceStub(channel)
            await admin.SetMonthlyBudget(billing_pb2.SetMonthlyBudgetRequest(tenant_id=tenant_id,
                                                                             budget_micros=micros), timeout=10)
        finally:
            await channel.close()

    asyncio.run(call())


def eventually(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_usage_invoice_and_budget_alert_webhooks(stack: Stack, receiver: Receiver) -> None:
    tenant: Tenant = stack.create_tenant("usage-budget-tenant", credit_usd="5")
    set_budget(stack, tenant.tenant_id, BUDGET_MICROS)
    month = datetime.now(UTC).strftime("%Y-%m")
    with httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {tenant.api_key}"},
                      timeout=15) as api:
        created = api.post("/v1/webhook_endpoints", json={"url": receiver.url, "events": ["billing.budget_alert"]})
        assert created.status_code == 200, created.text
        verifier = Webhook(created.json()["signing_secret"])

        first = submit(api, prompt="A blue speaker on a desk.", seconds=2, size="640x360", seed=11)
        done = wait_for(api, first["id"], {"completed", "failed"})
        assert done["status"] == "completed", done
        charge = done["cost"]["amount_micros"]
        assert charge == 20_000

        usage = eventually(lambda: api.get("/v1/usage", params={"group_by": "model,resolution"}).json()["data"])
        assert [(r["model"], r["resolution"], r["jobs"], r["amount_micros"]) for r in usage] == [
            ("animatic", "640x360", 1, charge)]
        exported = api.get("/v1/usage.csv", params={"period": month}).text
        assert first["id"] in exported
        invoice = api.get(f"/v1/invoices/{month}").json()
        assert invoice["total_micros"] == charge and invoice["status"] == "open"
        assert [(line["model"], line["resolution"], line["jobs"]) for line in invoice["lines"]] == [
            ("animatic", "640x360", 1)]
        assert [i["id"] for i in api.get("/v1/invoices").json()["data"]] == [month]

        assert eventually(lambda: len(receiver.received) >= 1), "no 80% budget alert arrived"
        second = submit(api, prompt="A green toy truck.", seconds=2, size="640x360", seed=12)
        assert wait_for(api, second["id"], {"completed", "failed"})["status"] == "completed"
        assert eventually(lambda: len(receiver.received) >= 2), "no 100% budget alert arrived"
        time.sleep(3)  # a duplicate would arrive within the delivery worker's poll interval

        alerts = []
        for headers, body, _ in receiver.received:
            alerts.append((verifier.verify(body, headers), headers["webhook-id"]))
        assert [(a["type"], a["data"]["threshold_pct"], a["data"]["period"]) for a, _ in alerts] == [
            ("billing.budget_alert", 80, month), ("billing.budget_alert", 100, month)]
        assert [a["data"]["spent_micros"] for a, _ in alerts] == [20_000, 40_000]
        assert alerts[0][1] != alerts[1][1]
        balance = api.get("/v1/balance").json()
        assert balance["available_micros"] == 5_000_000 - 2 * charge
