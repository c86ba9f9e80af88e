"""The ops console's data endpoint over a real PostgreSQL: queues, pools with their state, recent
failures by code; the token is required; billing down leaves spend unavailable, not a 500."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from reelforge_orchestrator import admin_api, config_store
from reelforge_orchestrator.billing_client import BillingClient
from reelforge_orchestrator.console import Console

from . import test_live_scheduling
from .test_live_scheduling import Harness

pytestmark = pytest.mark.asyncio


h = test_live_scheduling.h  # the harness fixture


def _app(h: Harness, billing: BillingClient, token: str | None) -> httpx.AsyncClient:
    admin = admin_api.AdminServicer(h.pool, lambda: h.engine)
    app = FastAPI()
    app.include_router(Console(admin, h.pool, billing, SecretStr(token) if token else None).router())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")


async def test_state_shows_queues_pools_and_failures(h: Harness) -> None:
    billing = BillingClient("127.0.0.1:1", 0.5)  # nothing listens: spend is unavailable
    async with _app(h, billing, "s3cret") as client:
        await config_store.set_pool_mode(h.pool, "animatic", paused=True, draining=False)
        await h.engine.reload()
        jobs = [await h.submit("acme") for _ in range(3)]
        await h.engine.step()
        paused = (await client.get("/console/api/state", headers={"Authorization": "Bearer s3cret"})).json()
        assert [(q["tenant_id"], q["waiting"], q["in_flight"]) for q in paused["tenants"]] == [("acme", 3, 0)]
        assert [(q["tier"], q["waiting"]) for q in paused["tiers"]] == [("standard", 3)]
        assert [(p["pool_id"], p["state"], p["in_use"]) for p in paused["pools"]] == [("animatic", "paused", 0)]
        assert paused["failures"] == {"window": "1 hour", "by_code": [], "recent": []}

        await config_store.set_pool_mode(h.pool, "animatic", paused=False, draining=False)
        await h.engine.reload()
        await h.engine.step()
        failing = jobs[0]
        await h.render_result(failing, ok=False, code="content_policy")  # not retriable: fails the job

        response = await client.get("/console/api/state", headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 200, response.text
        state = response.json()
        assert state["tenants"] == [{"tenant_id": "acme", "tier": "standard", "waiting": 0, "in_flight": 2,
                                     "oldest_wait_seconds": state["tenants"][0]["oldest_wait_seconds"]}]
        assert [(p["pool_id"], p["state"], p["circuit"], p["capacity"]) for p in state["pools"]] == [
            ("animatic", "active", "closed", 8)]
        assert state["pools"][0]["in_use"] == 2
        assert [(f["job_id"], f["tenant_id"], f["code"]) for f in state["failures"]["recent"]] == [
            (failing, "acme", "content_policy")]
        assert state["failures"]["by_code"] == [{"code": "content_policy", "count": 1}]
        assert state["spend"] == {"available": False, "error": "billing: unavailable"}

        await config_store.set_pool_mode(h.pool, "animatic", paused=False, draining=True)
        drained = (await client.get("/console/api/state", headers={"Authorization": "Bearer s3cret"})).json()
        assert drained["pools"][0]["state"] == "draining"

        for headers, code in (({}, "missing_operator_token"), ({"Authorization": "Bearer wrong"},
                                                                "invalid_operator_token")):
            refused = await client.get("/console/api/state", headers=headers)
            assert refused.status_code == 401 and refused.json()["code"] == code
            assert refused.headers["content-type"] == "application/problem+json"
    await billing.close()


async def test_without_a_token_the_console_is_disabled(h: Harness) -> None:
    billing = BillingClient("127.0.0.1:1", 0.5)
    async with _app(h, billing, None) as client:
        refused = await client.get("/console/api/state", headers={"Authorization": "Bearer anything"})
        assert refused.status_code == 404 and refused.json()["code"] == "console_disabled"
        page = await client.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert (await client.get("/console/console.js")).headers["content-type"].startswith("text/javascript")
        assert (await client.get("/console/__init__.py")).status_code == 404
    await billing.close()
