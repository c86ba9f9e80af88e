"""/v1/usage, /v1/usage.csv, /v1/invoices and /v1/balance through a real gateway and a real billing gRPC server
(both over one PostgreSQL, each in its own schema); budget alerts becoming webhook deliveries exactly once."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import httpx
import pytest
import schemathesis
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from reelforge.billing.v1 import billing_pb2
from reelforge_billing.grpc_api import start_server
from reelforge_billing.store import LedgerStore
from reelforge_billing.usage import UsageRecorder, UsageRow
from reelforge_core.content import ContentStore
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_gateway import endpoint_store
from reelforge_gateway.api.app import create_app
from reelforge_gateway.budget_alerts import BudgetAlertConsumer
from reelforge_gateway.settings import GatewaySettings
from services.billing.tests.billing_db import open_store
from services.gateway.tests.conftest import free_port, make_settings
from services.gateway.tests.harness import Gateway

PROBLEM = "application/problem+json"
# The billing routes of the document the app serves when it has a billing target.
_SPEC = create_app(None, ContentStore(Path("/tmp/reelforge-openapi-spec")),  # type: ignore[arg-type]
                   make_settings(billing_target="127.0.0.1:1")).openapi()
billing_routes = schemathesis.openapi.from_dict(_SPEC).include(path_regex=r"^/v1/(usage|invoices|balance)")


@dataclass
class Billing:
    store: LedgerStore
    server: grpc.aio.Server


@pytest.fixture
def billing_port() -> int:
    return free_port()


OPERATOR_TOKEN = "gateway-test-operator-token"


@pytest.fixture
def gateway_settings(billing_port: int) -> GatewaySettings:
    return make_settings(billing_target=f"127.0.0.1:{billing_port}", billing_operator_token=OPERATOR_TOKEN)


@pytest.fixture
def billing(gateway: Gateway, billing_port: int) -> Iterator[Billing]:
    async def up() -> tuple[object, Billing]:
        pool, ledger = await open_store(gateway.dsn, 5)
        server, _ = await start_server(ledger, "USD", "127.0.0.1", billing_port, operator_token=OPERATOR_TOKEN)
        return pool, Billing(ledger, server)

    pool, running = gateway.run(up())
    try:
        yield running
    finally:
        gateway.run(running.server.stop(grace=None))
        gateway.run(pool.close())  # type: ignore[attr-defined]


def client(gateway: Gateway, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key or gateway.api_key}"},
                        timeout=15)


def job(gateway: Gateway, ledger: LedgerStore, tenant_id: str, job_id: str, size: tuple[int, int],
        seconds: int) -> int:
    async def run() -> int:
        await ledger.reserve(tenant_id, job_id, "animatic", size[0], size[1], Decimal(seconds))
        charged = await ledger.settle(tenant_id, job_id, Decimal(seconds))
        await UsageRecorder(ledger.pool).record([UsageRow(
            f"evt-{job_id}", tenant_id, job_id, "animatic", size[0], size[1], Decimal(seconds), "animatic",
            "animatic", 0, charged, datetime.now(UTC))])
        return charged

    return int(gateway.run(run()))


def test_usage_invoices_and_balance_are_the_callers_own(gateway: Gateway, billing: Billing) -> None:
    other_tenant, other_key = gateway.new_tenant("globex")
    gateway.run(billing.store.grant(gateway.tenant_id, 5_000_000))
    gateway.run(billing.store.grant(other_tenant, 5_000_000))
    expires = datetime.now(UTC) + timedelta(days=7)
    gateway.run(billing.store.add_free_grant(gateway.tenant_id, "micros", Decimal(10_000), expires))
    job(gateway, billing.store, gateway.tenant_id, "job-hd-1", (1280, 720), 8)  # 200,000 (10,000 free)
    job(gateway, billing.store, gateway.tenant_id, "job-hd-2", (1280, 720), 4)  # 100,000
    job(gateway, billing.store, gateway.tenant_id, "job-sd-1", (640, 360), 5)  # 50,000
    job(gateway, billing.store, other_tenant, "job-other", (1920, 1080), 8)  # 400,000, not ours
    month = datetime.now(UTC).strftime("%Y-%m")

    with client(gateway) as api:
        usage = api.get("/v1/usage", params={"group_by": "resolution"}).json()
        assert usage["object"] == "usage" and usage["group_by"] == ["resolution"]
        assert [(r["resolution"], r["jobs"], r["seconds"], r["amount_micros"]) for r in usage["data"]] == [
            ("1280x720", 2, 12.0, 300_000), ("640x360", 1, 5.0, 50_000)]
        assert (usage["total_micros"], usage["total"], usage["currency"]) == (350_000, "0.350000", "USD")
        by_day = api.get("/v1/usage", params=[("group_by", "model,day"), ("period", month)]).json()
        assert [(r["model"], r["day"], r["resolution"]) for r in by_day["data"]] == [
            ("animatic", datetime.now(UTC).strftime("%Y-%m-%d"), None)]
        past = api.get("/v1/usage", params={"start": "2020-01-01", "end": "2020-02-01"}).json()
        assert past["data"] == [] and past["total_micros"] == 0

        exported = api.get("/v1/usage.csv", params={"period": month})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert sorted(r["job_id"] for r in rows) == ["job-hd-1", "job-hd-2", "job-sd-1"]
        assert "provider_cost" not in exported.text

        invoices = api.get("/v1/invoices").json()["data"]
        assert [(i["id"], i["status"], i["total_micros"], i["free_micros"]) for i in invoices] == [
            (month, "open", 340_000, 10_000)]
        lines = {(line["model"], line["resolution"]): line for line in invoices[0]["lines"]}
        assert lines[("animatic", "1280x720")]["jobs"] == 2
        assert lines[("animatic", "1280x720")]["charged_micros"] == 300_000
        assert sum(line["amount_micros"] for line in lines.values()) == invoices[0]["total_micros"]
        assert api.get(f"/v1/invoices/{month}").json() == invoices[0]

        balance = api.get("/v1/balance").json()
        assert (balance["available_micros"], balance["reserved_micros"], balance["mode"]) == (
            5_000_000 - 340_000, 0, "prepaid")
        assert [(g["unit"], g["amount"], g["remaining"]) for g in balance["grants"]] == []  # used up
        assert balance["free_micros"] == 0

    with client(gateway, other_key) as other:
        theirs = other.get("/v1/usage").json()
        assert [(r["jobs"], r["amount_micros"]) for r in theirs["data"]] == [(1, 400_000)]
        assert [i["total_micros"] for i in other.get("/v1/invoices").json()["data"]] == [400_000]
        assert "job-hd-1" not in other.get("/v1/usage.csv").text


def test_balance_shows_live_grants_and_credit_limit(gateway: Gateway, billing: Billing) -> None:
    gateway.run(billing.store.set_profile(gateway.tenant_id, mode="postpaid", credit_limit=2_000_000))
    expires = datetime.now(UTC) + timedelta(days=30)
    gateway.run(billing.store.add_free_grant(gateway.tenant_id, "seconds", Decimal(60), expires))
    with client(gateway) as api:
        balance = api.get("/v1/balance").json()
    assert (balance["mode"], balance["credit_limit_micros"], balance["free_seconds"]) == ("postpaid", 2_000_000, 60)
    assert [(g["unit"], g["remaining"]) for g in balance["grants"]] == [("seconds", 60)]
    assert datetime.fromisoformat(balance["grants"][0]["expires_at"]).timestamp() == pytest.approx(
        expires.timestamp(), abs=1)


def test_bad_requests_are_problems(gateway: Gateway, billing: Billing) -> None:
    with client(gateway) as api:
        for params in ({"group_by": "pool"}, {"period": "2026-13"}, {"period": "2026-01", "start": "2026-01-01"},
                       {"start": "yesterday"}, {"start": "2026-02-01", "end": "2026-01-01"},
                       {"start": "2020-01-01", "end": "2026-01-01"}):
            response = api.get("/v1/usage", params=params)
            assert response.status_code == 422, params
            assert response.headers["content-type"] == PROBLEM and response.json()["code"] == "invalid_request"
        assert api.get("/v1/usage.csv", params={"period": "last"}).status_code == 422
        for invoice_id in ("nope", "2999-01", "2026-1"):
            response = api.get(f"/v1/invoices/{invoice_id}")
            assert response.status_code == 404 and response.json()["code"] == "invoice_not_found"
    assert httpx.get(f"{gateway.url}/v1/usage").status_code == 401
    assert httpx.get(f"{gateway.url}/v1/balance").headers["content-type"] == PROBLEM
    gateway.run(billing.server.stop(grace=None))
    with client(gateway) as api:
        down = api.get("/v1/balance")
    assert down.status_code == 503 and down.json()["code"] == "billing_unavailable"


@billing_routes.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_billing_routes_conform_to_their_schema(case: schemathesis.Case, gateway: Gateway, billing: Billing) -> None:
    """No 5xx and no undocumented response while billing is up (a schema-valid but meaningless period, such as
    an end before the start, is rightly a 422)."""
    case.call_and_validate(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.api_key}"},
                           excluded_checks=[positive_data_acceptance])


def test_without_billing_the_routes_are_not_offered() -> None:
    app = create_app(None, ContentStore(Path("/tmp/reelforge-openapi-spec")), make_settings())  # type: ignore[arg-type]
    assert not [path for path in app.openapi()["paths"] if path.startswith(("/v1/usage", "/v1/invoices"))]


def test_routes_are_in_the_openapi_document(gateway: Gateway) -> None:
    paths = httpx.get(f"{gateway.url}/openapi.json").json()["paths"]
    for path in ("/v1/usage", "/v1/usage.csv", "/v1/invoices", "/v1/invoices/{invoice_id}", "/v1/balance"):
        assert "get" in paths[path], path
    assert "503" in paths["/v1/usage"]["get"]["responses"]
    assert "text/csv" in paths["/v1/usage.csv"]["get"]["responses"]["200"]["content"]


def alert_event(tenant_id: str, pct: int, offset: int) -> Event:
    at = Timestamp()
    at.GetCurrentTime()
    alert = billing_pb2.BudgetAlertRaised(alert_id=pct, tenant_id=tenant_id, month="2026-11", threshold_pct=pct,
                                          spent_micros=pct * 10_000, budget_micros=1_000_000, currency="USD", at=at)
    return Event("billing.v1.budget-alert", 0, offset, tenant_id, alert.SerializeToString(),
                 {"event-id": f"e{offset}"})


def test_budget_alerts_become_one_delivery_per_threshold_and_endpoint(gateway: Gateway) -> None:
    subscribed = gateway.run(endpoint_store.create(
        gateway.pool, gateway.secret_box, gateway.tenant_id, "alerts", "https://example.com/hook",
        ["billing.budget_alert", "job.completed"], "whsec_x", 16))
    assert subscribed is not None
    gateway.run(endpoint_store.create(gateway.pool, gateway.secret_box, gateway.tenant_id, "jobs", "https://example.com/jobs",
                                      ["job.completed"], "whsec_y", 16))
    consumer = BudgetAlertConsumer(gateway.pool)
    # The 80% alert arrives twice (re-published by the relay, as a new record), then the 100% one.
    for event in (alert_event(gateway.tenant_id, 80, 1), alert_event(gateway.tenant_id, 80, 2),
                  alert_event(gateway.tenant_id, 100, 3)):
        gateway.run(consumer.handle(event))
    rows = gateway.run(gateway.pool.fetch(
        "SELECT endpoint_id, event_type, payload FROM webhook_deliveries ORDER BY created_at, delivery_id"))
    assert [(r["endpoint_id"], r["event_type"]) for r in rows] == [(subscribed["endpoint_id"],
                                                                   "billing.budget_alert")] * 2
    payloads = [json.loads(r["payload"]) for r in rows]
    assert sorted(p["data"]["threshold_pct"] for p in payloads) == [80, 100]
    assert all(p["type"] == "billing.budget_alert" and p["data"]["period"] == "2026-11" for p in payloads)
    with pytest.raises(PoisonMessage):
        gateway.run(consumer.handle(alert_event(gateway.tenant_id, 50, 4)))
