"""The admin API (tenants, keys, webhook endpoints), scopes on every route, rotation, revocation, expiry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from httpx import ASGITransport

from reelforge_gateway import tenancy
from reelforge_gateway.api.app import create_app
from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings(webhook_allowed_hosts=["127.0.0.1"])


@pytest.fixture
def admin(gateway: Gateway) -> httpx.Client:
    _, _, key = gateway.run(tenancy.bootstrap_admin_key(gateway.pool, "platform"))
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key.plaintext}"}, timeout=15)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def test_tenants_create_list_get_update(gateway: Gateway, admin: httpx.Client) -> None:
    created = admin.post("/v1/admin/tenants", json={"name": "acme-retail", "rate_limit_per_minute": 120,
                                                    "max_concurrent_jobs": 5})
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert tenant["object"] == "tenant" and tenant["status"] == "active" and tenant["max_backlog_jobs"] is None
    problem(admin.post("/v1/admin/tenants", json={"name": "acme-retail"}), 409, "tenant_name_taken")
    problem(admin.post("/v1/admin/tenants", json={"name": ""}), 422, "invalid_request")
    problem(admin.post("/v1/admin/tenants", json={"name": "x", "max_concurrent_jobs": -1}), 422, "invalid_request")
    problem(admin.post("/v1/admin/tenants", json={"name": "x", "surprise": 1}), 422, "invalid_request")

    assert admin.get(f"/v1/admin/tenants/{tenant['id']}").json() == tenant
    problem(admin.get("/v1/admin/tenants/ten_000000000000000000000000"), 404, "tenant_not_found")
    problem(admin.get("/v1/admin/tenants/whatever"), 404, "tenant_not_found")

    names = []
    cursor = None
    while True:
        page = admin.get("/v1/admin/tenants", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        names += [t["name"] for t in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert names == ["acme", "platform", "acme-retail"]  # oldest first: the harness tenant, the admin's, the new one
    problem(admin.get("/v1/admin/tenants", params={"cursor": "nope"}), 422, "invalid_cursor")

    updated = admin.patch(f"/v1/admin/tenants/{tenant['id']}", json={"max_concurrent_jobs": None, "name": "acme-2"})
    assert updated.status_code == 200
    assert updated.json()["name"] == "acme-2" and updated.json()["max_concurrent_jobs"] is None
    assert updated.json()["rate_limit_per_minute"] == 120  # not sent, not changed
    problem(admin.patch(f"/v1/admin/tenants/{tenant['id']}", json={"name": "platform"}), 409, "tenant_name_taken")
    problem(admin.patch(f"/v1/admin/tenants/{tenant['id']}", json={"status": "gone"}), 422, "invalid_request")
    problem(admin.patch(f"/v1/admin/tenants/{tenant['id']}", json={"name": None}), 422, "invalid_request")


def test_keys_are_shown_once_stored_hashed_and_scoped(gateway: Gateway, admin: httpx.Client) -> None:
    tenant = admin.post("/v1/admin/tenants", json={"name": "keyed"}).json()
    created = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "ci", "scopes": ["jobs:read"]})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith(key["prefix"] + "_") and key["scopes"] == ["jobs:read"] and key["status"] == "active"
    stored = gateway.run(gateway.pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key["id"]))
    assert key["key"] not in {str(v) for v in dict(stored).values()}  # only the hash is kept
    listed = admin.get(f"/v1/admin/tenants/{tenant['id']}/keys").json()["data"]
    assert [k["id"] for k in listed] == [key["id"]] and listed[0]["key"] is None

    read_only = bearer(key["key"])
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=read_only).status_code == 200
    problem(httpx.post(f"{gateway.url}/v1/jobs", json={"prompt": "x", "seconds": 4}, headers=read_only), 403,
            "insufficient_scope")
    problem(httpx.get(f"{gateway.url}/v1/admin/tenants", headers=read_only), 403, "insufficient_scope")
    problem(admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"scopes": ["root"]}), 422, "invalid_request")
    problem(admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"scopes": []}), 422, "invalid_request")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    problem(admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"expires_at": past}), 422, "invalid_request")
    problem(admin.post("/v1/admin/tenants/ten_000000000000000000000000/keys", json={}), 404, "tenant_not_found")


def test_scopes_are_enforced_on_every_route(gateway: Gateway, admin: httpx.Client) -> None:
    """Every authenticated route refuses a key without the scope it needs before reading the request:
    reads need jobs:read, changes jobs:write, /v1/admin needs admin (routes added later included)."""
    app = create_app(gateway.pool, gateway.content, make_settings())
    admin_only = admin.headers["Authorization"].removeprefix("Bearer ")
    read_only = _key(gateway, ["jobs:read"])
    write_only = _key(gateway, ["jobs:write"])
    open_paths = ("/v1/downloads/", "/docs", "/openapi.json")
    checked = 0
    for template, operations in app.openapi()["paths"].items():  # every documented route
        if template.startswith(open_paths):
            continue
        path = template.replace("{", "").replace("}", "")  # any id: the scope is checked first
        for method in (m.upper() for m in operations):
            if template.startswith("/v1/admin"):
                keys = [read_only, write_only]
            elif method in ("GET", "HEAD"):
                keys = [admin_only, write_only]
            else:
                keys = [admin_only, read_only]
            for key in keys:
                response = httpx.request(method, f"{gateway.url}{path}", headers=bearer(key), json={})
                assert response.status_code == 403, (method, template, response.text)
                checked += 1
    assert checked >= 30


def _key(gateway: Gateway, scopes: list[str], tenant_id: str | None = None) -> str:
    created = gateway.run(tenancy.create_key(gateway.pool, tenant_id or gateway.tenant_id, scopes))
    assert created is not None
    return created[1].plaintext


def test_rotation_keeps_the_old_key_for_the_grace_period(gateway: Gateway, admin: httpx.Client) -> None:
    tenant = admin.post("/v1/admin/tenants", json={"name": "rotating"}).json()
    old = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "prod"}).json()
    rotated = admin.post(f"/v1/admin/keys/{old['id']}/rotate", json={"grace_seconds": 2})
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["rotated_from"] == old["id"] and new["name"] == "prod" and new["key"] != old["key"]
    assert new["scopes"] == old["scopes"] and new["tenant_id"] == tenant["id"]
    for key in (old["key"], new["key"]):
        assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key)).status_code == 200
    time.sleep(2.5)
    problem(httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(old["key"])), 401, "invalid_api_key")
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(new["key"])).status_code == 200
    problem(admin.post(f"/v1/admin/keys/{old['id']}/rotate"), 409, "api_key_not_active")
    statuses = {k["id"]: k["status"] for k in admin.get(f"/v1/admin/tenants/{tenant['id']}/keys").json()["data"]}
    assert statuses == {old["id"]: "expired", new["id"]: "active"}
    # Without a grace period the old key stops at once.
    newest = admin.post(f"/v1/admin/keys/{new['id']}/rotate", json={"grace_seconds": 0}).json()
    problem(httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(new["key"])), 401, "invalid_api_key")
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(newest["key"])).status_code == 200
    problem(admin.post("/v1/admin/keys/key_000000000000000000000000/rotate"), 404, "api_key_not_found")
    problem(admin.post(f"/v1/admin/keys/{newest['id']}/rotate", json={"grace_seconds": -1}), 422, "invalid_request")


def test_expiry(gateway: Gateway, admin: httpx.Client) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    key = admin.post(f"/v1/admin/tenants/{gateway.tenant_id}/keys", json={"expires_at": soon}).json()
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key["key"])).status_code == 200
    time.sleep(2.5)
    problem(httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key["key"])), 401, "invalid_api_key")


def test_revocation_is_immediate_on_every_instance(gateway: Gateway, admin: httpx.Client) -> None:
    """A second gateway instance with its key cache on (fed by the change listener) stops honouring a
    revoked key as soon as the first instance revokes it."""
    key = admin.post(f"/v1/admin/tenants/{gateway.tenant_id}/keys", json={}).json()
    other = create_app(gateway.pool, gateway.content, make_settings(key_cache_seconds=300))
    assert not other.state.key_cache.live  # off until its instance listens for changes

    async def listen() -> None:  # on the server's loop, where the pool lives
        other.state.notifications.start()

    gateway.run(listen())

    async def get(path: str) -> int:
        async with httpx.AsyncClient(transport=ASGITransport(app=other), base_url="http://other") as client:
            return (await client.get(path, headers=bearer(key["key"]))).status_code

    deadline = time.monotonic() + 10
    while not other.state.key_cache.live and time.monotonic() < deadline:
        time.sleep(0.02)
    assert other.state.key_cache.live
    assert gateway.run(get("/v1/jobs")) == 200  # now cached on the other instance
    revoked = admin.delete(f"/v1/admin/keys/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    statuses = []
    for _ in range(20):
        statuses.append(gateway.run(get("/v1/jobs")))
        if statuses[-1] == 401:
            break
        time.sleep(0.05)
    assert statuses[-1] == 401 and len(statuses) <= 3, statuses
    problem(httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key["key"])), 401, "invalid_api_key")
    assert admin.delete(f"/v1/admin/keys/{key['id']}").json()["revoked_at"] == revoked.json()["revoked_at"]
    problem(admin.delete("/v1/admin/keys/key_000000000000000000000000"), 404, "api_key_not_found")
    gateway.run(other.state.notifications.close())


def test_suspending_a_tenant_refuses_its_keys(gateway: Gateway, admin: httpx.Client) -> None:
    assert admin.patch(f"/v1/admin/tenants/{gateway.tenant_id}", json={"status": "suspended"}).status_code == 200
    problem(httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(gateway.api_key)), 403, "tenant_suspended")
    assert admin.patch(f"/v1/admin/tenants/{gateway.tenant_id}", json={"status": "active"}).status_code == 200
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(gateway.api_key)).status_code == 200


def test_webhook_endpoints_of_a_tenant(gateway: Gateway, admin: httpx.Client) -> None:
    other_id, other_key = gateway.new_tenant("other")
    url = f"/v1/admin/tenants/{gateway.tenant_id}/webhook_endpoints"
    created = admin.post(url, json={"url": "http://127.0.0.1:9/hook"})
    assert created.status_code == 201, created.text
    assert created.json()["signing_secret"].startswith("whsec_")
    problem(admin.post(url, json={"url": "http://169.254.169.254/latest"}), 400, "webhook_url_forbidden")
    mine = httpx.get(f"{gateway.url}/v1/webhook_endpoints", headers=bearer(gateway.api_key)).json()["data"]
    assert [e["id"] for e in mine] == [created.json()["id"]]
    assert "signing_secret" not in admin.get(url).json()["data"][0]  # shown once
    # Tenant isolation: the other tenant sees none of them, and cannot delete them through its own path.
    assert httpx.get(f"{gateway.url}/v1/webhook_endpoints", headers=bearer(other_key)).json()["data"] == []
    assert admin.get(f"/v1/admin/tenants/{other_id}/webhook_endpoints").json()["data"] == []
    problem(admin.delete(f"/v1/admin/tenants/{other_id}/webhook_endpoints/{created.json()['id']}"), 404,
            "webhook_endpoint_not_found")
    assert admin.delete(f"{url}/{created.json()['id']}").status_code == 204
    assert admin.get(url).json()["data"] == []


def test_admin_keys_list_only_that_tenants_keys(gateway: Gateway, admin: httpx.Client) -> None:
    a = admin.post("/v1/admin/tenants", json={"name": "tenant-a"}).json()
    b = admin.post("/v1/admin/tenants", json={"name": "tenant-b"}).json()
    key_a = admin.post(f"/v1/admin/tenants/{a['id']}/keys", json={}).json()
    key_b = admin.post(f"/v1/admin/tenants/{b['id']}/keys", json={}).json()
    assert [k["id"] for k in admin.get(f"/v1/admin/tenants/{a['id']}/keys").json()["data"]] == [key_a["id"]]
    assert [k["id"] for k in admin.get(f"/v1/admin/tenants/{b['id']}/keys").json()["data"]] == [key_b["id"]]
    # A tenant key cannot use the admin API, whatever the tenant.
    for key in (key_a["key"], key_b["key"]):
        problem(httpx.get(f"{gateway.url}/v1/admin/tenants/{a['id']}/keys", headers=bearer(key)), 403,
                "insufficient_scope")
        problem(httpx.delete(f"{gateway.url}/v1/admin/keys/{key_a['id']}", headers=bearer(key)), 403,
                "insufficient_scope")
    # A job of tenant A is not visible with tenant B's key.
    job = httpx.post(f"{gateway.url}/v1/jobs", json={"prompt": "x", "seconds": 4}, headers=bearer(key_a["key"])).json()
    problem(httpx.get(f"{gateway.url}/v1/jobs/{job['id']}", headers=bearer(key_b["key"])), 404, "job_not_found")


def test_admin_routes_are_documented(gateway: Gateway) -> None:
    paths = httpx.get(f"{gateway.url}/openapi.json").json()["paths"]
    for path, method in [("/v1/admin/tenants", "post"), ("/v1/admin/tenants", "get"),
                         ("/v1/admin/tenants/{tenant_id}", "get"), ("/v1/admin/tenants/{tenant_id}", "patch"),
                         ("/v1/admin/tenants/{tenant_id}/keys", "post"), ("/v1/admin/tenants/{tenant_id}/keys", "get"),
                         ("/v1/admin/keys/{key_id}/rotate", "post"), ("/v1/admin/keys/{key_id}", "delete")]:
        assert method in paths[path], (path, method)
        assert "403" in paths[path][method]["responses"]
