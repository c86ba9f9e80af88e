"""Metering end to end: a completed job's usage.v1.recorded event becomes one usage row in billing,
agreeing with the ledger's one settlement (usage never charges again)."""

from __future__ import annotations

import asyncio

import httpx

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_local.stack import Stack, Tenant
from tests.conftest import db_fetch
from tests.e2e.helpers import submit, wait_for, wait_for_usage_rows


def test_completed_job_is_metered_once_and_reconciles(stack: Stack, api: httpx.Client, tenant: Tenant) -> None:
    job = submit(api, prompt="A red toy car on a wooden floor.", seconds=2, size="640x360", seed=3)
    done = wait_for(api, job["id"], {"completed", "failed"})
    assert done["status"] == "completed", done

    rows = wait_for_usage_rows(stack, job["id"])
    assert len(rows) == 1, "the usage event was not recorded"
    assert rows[0]["charged_micros"] == done["cost"]["amount_micros"]
    assert rows[0]["tenant_id"] == tenant.tenant_id
    settles = db_fetch(stack, "billing", "SELECT id FROM ledger_transactions WHERE kind = 'settle' AND job_id = $1",
                       job["id"])
    assert len(settles) == 1

    async def over_grpc() -> tuple[billing_pb2.ExportUsageResponse, billing_pb2.ReconcileReport]:
        port = stack.services["billing"].env["REELFORGE_BILLING_GRPC_PORT"]
        channel = core_grpc.channel(f"127.0.0.1:{port}", stack.operator_token)
        try:
            stub = billing_pb2_grpc.BillingServiceStub(channel)
            exported = await stub.ExportUsage(billing_pb2.ExportUsageRequest(tenant_id=tenant.tenant_id), timeout=10)
            report = await stub.Reconcile(billing_pb2.ReconcileRequest(), timeout=10)
            return exported, report
        finally:
            await channel.close()

    exported, report = asyncio.run(over_grpc())
    assert job["id"] in exported.csv
    assert job["id"] not in {d.job_id for d in report.differences}
