"""The ops console in headless Chromium against the shared platform: queues per tenant, pools with
their state, a failure with its code, spend today; the data endpoint refuses without the token."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import grpc
import httpx
from playwright.sync_api import Page, expect

from reelforge.orchestrator.v1 import admin_pb2, admin_pb2_grpc
from reelforge_core.grpc_auth import bearer
from reelforge_local.stack import Stack
from tests.e2e.helpers import submit, wait_for
from tests.ops.browser import chromium

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _row(page: Page, table: str, first_cell: str) -> list[str]:
    """The cells of the row of `table` whose first cell is `first_cell` (waits for it to appear)."""
    row = page.locator(f"#{table} tbody tr").filter(has=page.locator("td:first-child", has_text=first_cell))
    expect(row).to_have_count(1, timeout=15_000)
    return [text.strip() for text in row.locator("td").all_inner_texts()]


def _waiting(admin: admin_pb2_grpc.OrchestratorAdminStub, tenant_id: str, token: str) -> int:
    queues = admin.GetQueues(admin_pb2.GetQueuesRequest(), timeout=5, metadata=bearer(token))
    return sum(q.waiting for q in queues.tenants if q.tenant_id == tenant_id)


def test_console_shows_queues_pools_failures_and_spend(stack: Stack, tmp_path: Path) -> None:
    paying = stack.create_tenant("console-paying", credit_usd="20")
    broke = stack.create_tenant("console-broke", credit_usd="0")
    paying_api = httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {paying.api_key}"},
                              timeout=15)
    broke_api = httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {broke.api_key}"},
                             timeout=15)
    channel = grpc.insecure_channel(stack.admin_target)
    admin = admin_pb2_grpc.OrchestratorAdminStub(channel)
    try:
        done = submit(paying_api, prompt="Console spend", seconds=1, size="640x360")
        assert wait_for(paying_api, done["id"], {"completed", "failed"})["status"] == "completed"
        failed = submit(broke_api, prompt="Console failure", seconds=1, size="640x360")
        failure = wait_for(broke_api, failed["id"], {"completed", "failed"})
        assert failure["status"] == "failed" and failure["error"]["code"] == "insufficient_credit"

        admin.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id="animatic", mode=admin_pb2.POOL_MODE_PAUSE), timeout=5,
                          metadata=bearer(stack.operator_token))
        queued = [submit(paying_api, prompt=f"Console queued {i}", seconds=1, size="640x360") for i in range(2)]
        deadline = time.monotonic() + 30
        while _waiting(admin, paying.tenant_id, stack.operator_token) < 2:
            assert time.monotonic() < deadline, "jobs never queued behind the paused pool"
            time.sleep(0.2)

        with chromium(tmp_path / "profile") as browser:
            page = browser.new_page()
            page.goto(stack.console_url)
            tenant = _row(page, "tenants", paying.tenant_id)
            assert tenant[1:4] == ["standard", "2", "0"], tenant
            assert int(_row(page, "tiers", "standard")[1]) >= 2
            pool = _row(page, "pools", "animatic")
            assert pool[1:3] == ["animatic", "animatic"] and pool[5:] == ["closed", "paused"], pool
            assert pool[3].endswith("/ 8"), pool
            failures = page.locator("#failures tbody tr").filter(has_text=failed["id"])
            expect(failures).to_have_count(1)
            cells = [text.strip() for text in failures.locator("td").all_inner_texts()]
            assert cells[2:4] == [broke.tenant_id, "insufficient_credit"], cells
            assert int(_row(page, "failure-codes", "insufficient_credit")[1]) >= 1
            spend = _row(page, "spend", paying.tenant_id)
            assert int(spend[1]) >= 1 and float(spend[2]) > 0, spend
            expect(page.locator("#spend-total")).to_contain_text("charged")
            page.screenshot(path=str(tmp_path / "ops-console.png"), full_page=True)
            if os.environ.get("REELFORGE_DOCS_SCREENSHOT"):
                shutil.copy(tmp_path / "ops-console.png", DOCS / "ops-console.png")

            admin.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id="animatic", mode=admin_pb2.POOL_MODE_RESUME),
                              timeout=5, metadata=bearer(stack.operator_token))
            for job in queued:
                assert wait_for(paying_api, job["id"], {"completed", "failed"})["status"] == "completed"
            # the page keeps polling: the tenant's queue row goes and the pool is active again
            expect(page.locator("#tenants tbody tr").filter(has_text=paying.tenant_id)).to_have_count(0,
                                                                                                      timeout=15_000)
            expect(page.locator("#pools tbody tr").filter(has_text="animatic").locator("td").nth(6)).to_have_text(
                "active", timeout=15_000)

            wrong = browser.new_page()
            wrong.goto(stack.console_url.split("#")[0] + "#token=wrong")
            expect(wrong.locator("#status")).to_contain_text("not valid")
            expect(wrong.locator("#login")).to_be_visible()
            expect(wrong.locator("#content")).to_be_hidden()
        assert (tmp_path / "ops-console.png").stat().st_size > 10_000
    finally:
        admin.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id="animatic", mode=admin_pb2.POOL_MODE_RESUME), timeout=5,
                          metadata=bearer(stack.operator_token))
        channel.close()
        paying_api.close()
        broke_api.close()


def test_console_data_needs_the_operator_token(stack: Stack) -> None:
    base = stack.services["orchestrator"].url
    missing = httpx.get(f"{base}/console/api/state", timeout=10)
    assert missing.status_code == 401 and missing.json()["code"] == "missing_operator_token"
    assert missing.headers["content-type"].startswith("application/problem+json")
    wrong = httpx.get(f"{base}/console/api/state", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_operator_token"
    page = httpx.get(f"{base}/console", timeout=10)
    assert page.status_code == 200 and "ops console" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{base}/console/..%2Fsettings.py", timeout=10).status_code == 404
    state = httpx.get(f"{base}/console/api/state", headers={"Authorization": f"Bearer {stack.operator_token}"},
                      timeout=10).json()
    assert {"tiers", "tenants", "pools", "failures", "spend"} <= set(state)
    assert state["spend"]["available"] is True
