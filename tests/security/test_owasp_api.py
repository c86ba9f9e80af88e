"""OWASP API Security Top 10 (2023) against the running platform.

The object-level test walks every route in /openapi.json: a route with an id it does not know how
to fill fails the test, so a new route cannot skip the tenant-isolation check.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelforge_local.stack import Stack, Tenant
from tests.e2e.helpers import submit, wait_for

# A public address literal: it passes the SSRF guard without DNS (deliveries to it simply fail here).
PUBLIC_HOOK = "https://93.184.215.14/reelforge-hook"
VICTIM_PROMPT = "A quiet harbour at dawn."
_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")
# Routes that are not authenticated by API key: a signed link is their credential.
_SIGNED_ROUTES = {"/v1/downloads/{job_id}"}
# Ids that name a period of the caller's own account, not another tenant's object.
_OWN_ACCOUNT_PARAMS = {"invoice_id"}


@pytest.fixture(scope="module")
def other(stack: Stack) -> Tenant:
    return stack.create_tenant(f"owasp-other-{uuid.uuid4().hex[:6]}", credit_usd="5")


@pytest.fixture(scope="module")
def attacker(stack: Stack) -> Tenant:
    return stack.create_tenant(f"owasp-attacker-{uuid.uuid4().hex[:6]}", credit_usd="5")


def _client(stack: Stack, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=15)


@pytest.fixture(scope="module")
def victim_ids(stack: Stack, other: Tenant) -> Iterator[dict[str, str]]:
    """Objects the other tenant owns, by the path parameter names the API uses for them."""
    with _client(stack, other.api_key) as victim:
        job = submit(victim, prompt=VICTIM_PROMPT, seconds=2, size="640x360", seed=5)
        wait_for(victim, job["id"], {"completed", "failed"})
        endpoint = victim.post("/v1/webhook_endpoints", json={"url": PUBLIC_HOOK})
        assert endpoint.status_code == 200, endpoint.text
        endpoint_id = endpoint.json()["id"]
        deliveries = victim.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries").json()["data"]
        character = victim.post("/v1/videos/characters", data={"name": "victim"},
                                files={"video": ("v.mp4", _tiny_mp4(), "video/mp4")})
        assert character.status_code == 200, character.text
        batch = victim.post("/v1/batches", headers={"Content-Type": "application/jsonl"},
                            content=b'{"prompt": "A quiet harbour at dawn.", "seconds": 2, "size": "640x360"}\n')
        assert batch.status_code == 202, batch.text
        template = victim.post("/v1/templates", json={"name": f"victim-{uuid.uuid4().hex[:6]}",
                                                      "prompt": VICTIM_PROMPT})
        assert template.status_code == 201, template.text
        yield {
            "batch_id": batch.json()["id"], "name": template.json()["name"],
            "job_id": job["id"], "video_id": job["id"], "endpoint_id": endpoint_id,
            "delivery_id": deliveries[0]["id"] if deliveries else str(uuid.uuid4()),
            "tenant_id": other.tenant_id, "key_id": _a_key_id_of(stack, other),
            "invoice_id": time.strftime("%Y-%m", time.gmtime()),
            "character_id": character.json()["id"],
        }


def _tiny_mp4() -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=1",
                           "-pix_fmt", "yuv420p", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4", "-"],
                          capture_output=True, check=True).stdout


def _a_key_id_of(stack: Stack, tenant: Tenant) -> str:
    with _client(stack, stack.admin_key()) as admin:
        keys = admin.get(f"/v1/admin/tenants/{tenant.tenant_id}/keys")
        assert keys.status_code == 200, keys.text
        key_id: str = keys.json()["data"][0]["id"]
        return key_id


def _routes(stack: Stack) -> list[tuple[str, str]]:
    spec = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=15).json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
            if method in ("get", "post", "put", "patch", "delete") and _PATH_PARAM.search(path)]


def test_object_level_authorisation_on_every_id_route(
    stack: Stack, attacker: Tenant, victim_ids: dict[str, str]
) -> None:
    routes = _routes(stack)
    assert len(routes) >= 8, routes
    with _client(stack, attacker.api_key) as client:
        for method, path in routes:
            names = _PATH_PARAM.findall(path)
            unknown = [name for name in names if name not in victim_ids]
            assert not unknown, f"{method} {path}: no victim object for {unknown}; extend victim_ids"
            url = _PATH_PARAM.sub(lambda m: victim_ids[m.group(1)], path)
            response = client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
            expected = {403, 404} if path.startswith("/v1/admin") else {404}
            if path in _SIGNED_ROUTES:
                expected = {401, 403, 404, 422}  # 422: the signature parameters are missing
            if set(names) <= _OWN_ACCOUNT_PARAMS:
                expected = {200, 404}
                assert victim_ids["tenant_id"] not in response.text, f"{method} {path} shows the other tenant"
            assert response.status_code in expected, f"{method} {path} as another tenant: {response.status_code}"
            assert VICTIM_PROMPT not in response.text, f"{method} {path} leaked the other tenant's object"

    with _client(stack, None) as anonymous:
        owner = anonymous.get(f"/v1/jobs/{victim_ids['job_id']}")
        assert owner.status_code == 401


@pytest.mark.parametrize("header", [
    None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer rfk_", "Bearer rfk_0123456789_" + "A" * 43,
    "Bearer " + "x" * 5000, "bearer\tsomething", "Bearer rfk_../../etc_" + "A" * 43,
])
def test_broken_authentication_is_401_problem_json(stack: Stack, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for path in ("/v1/jobs", "/v1/videos", "/v1/webhook_endpoints"):
        response = httpx.get(f"{stack.gateway_url}{path}", headers=headers, timeout=15)
        assert response.status_code == 401, (path, header, response.status_code)
        body = response.json()
        if path.startswith(("/v1/videos", "/v1/webhook_endpoints")):  # OpenAI's error object
            assert body["error"]["type"] == "invalid_request_error" or body["error"]["code"], body
        else:
            assert response.headers["content-type"].startswith("application/problem+json"), response.headers
            assert body["status"] == 401 and body["code"], body


def test_a_real_prefix_with_a_wrong_secret_is_refused(stack: Stack, attacker: Tenant) -> None:
    prefix = attacker.api_key.split("_")[1]
    forged = f"rfk_{prefix}_{'B' * 43}"
    response = httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {forged}"}, timeout=15)
    assert response.status_code == 401


def test_function_level_authorisation_partner_keys_on_admin_routes(
    stack: Stack, attacker: Tenant, victim_ids: dict[str, str]
) -> None:
    spec = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=15).json()
    admin_routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p.startswith("/v1/admin")]
    assert len(admin_routes) >= 6, admin_routes
    with _client(stack, attacker.api_key) as client:
        for method, path in admin_routes:
            url = _PATH_PARAM.sub(lambda m: victim_ids[m.group(1)], path)
            response = client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
            assert response.status_code == 403, f"{method} {path} with a partner key: {response.status_code}"
            assert response.json()["code"], response.text


def test_revoked_and_expired_keys_are_refused(stack: Stack, attacker: Tenant) -> None:
    with _client(stack, stack.admin_key()) as admin:
        made = admin.post(f"/v1/admin/tenants/{attacker.tenant_id}/keys", json={"name": "to-revoke"})
        assert made.status_code == 201, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        assert httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                         timeout=15).status_code == 200
        assert admin.delete(f"/v1/admin/keys/{key_id}").status_code in (200, 204)
        assert httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                         timeout=15).status_code == 401

        rotated = admin.post(f"/v1/admin/tenants/{attacker.tenant_id}/keys", json={"name": "to-rotate"})
        old_key, old_id = rotated.json()["key"], rotated.json()["id"]
        new = admin.post(f"/v1/admin/keys/{old_id}/rotate", json={"grace_seconds": 0})
        assert new.status_code in (200, 201), new.text
        assert httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {old_key}"},
                         timeout=15).status_code == 401
        assert httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {new.json()['key']}"},
                         timeout=15).status_code == 200


def test_property_level_authorisation(stack: Stack, attacker: Tenant, other: Tenant) -> None:
    """Fields a partner must not set are refused, never silently honoured."""
    with _client(stack, attacker.api_key) as client:
        for field, value in [("tenant_id", other.tenant_id), ("status", "completed"), ("cost", {"amount_micros": 0}),
                             ("tier", "enterprise"), ("priority", 100), ("id", str(uuid.uuid4()))]:
            body = {"prompt": "A lamp.", "seconds": 2, "size": "640x360", field: value}
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 422, (field, response.status_code, response.text)
            assert field in response.text


def test_security_headers_on_every_kind_of_response(stack: Stack, attacker: Tenant) -> None:
    with _client(stack, attacker.api_key) as client:
        for response in (client.get("/v1/jobs"), client.get("/v1/jobs/nope"), client.get("/openapi.json"),
                         httpx.get(f"{stack.gateway_url}/v1/jobs", timeout=15)):
            assert response.headers.get("x-content-type-options") == "nosniff", response.url
            assert "no-store" in response.headers.get("cache-control", ""), response.url
            assert response.headers.get("x-frame-options") == "DENY", response.url
            assert "server" not in response.headers or "uvicorn" not in response.headers["server"].lower()


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:9/x", "http://localhost/x", "http://[::1]/x", "http://10.1.2.3/x", "http://192.168.0.1/x",
    "http://172.16.5.4/x", "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x", "http://0.0.0.0/x",
    "http://[::ffff:127.0.0.1]/x", "http://2130706433/x", "http://0x7f.0.0.1/x", "file:///etc/passwd",
    "gopher://127.0.0.1:25/x", "http://user:pass@93.184.215.14/x", "http://metadata.google.internal/x",
])
def test_ssrf_guard_on_webhook_urls(stack: Stack, attacker: Tenant, url: str) -> None:
    with _client(stack, attacker.api_key) as client:
        response = client.post("/v1/webhook_endpoints", json={"url": url})
        assert response.status_code in (400, 422), (url, response.status_code, response.text)


def test_unrestricted_resource_consumption_limits(stack: Stack, attacker: Tenant) -> None:
    with _client(stack, attacker.api_key) as client:
        long_prompt = client.post("/v1/jobs", json={"prompt": "word " * 20_000, "seconds": 2, "size": "640x360"})
        assert long_prompt.status_code in (413, 422), long_prompt.status_code
        huge = client.post("/v1/jobs", content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
                           headers={"content-type": "application/json"})
        assert huge.status_code == 413, huge.status_code
        too_long_video = client.post("/v1/jobs", json={"prompt": "A lamp.", "seconds": 100_000, "size": "640x360"})
        assert too_long_video.status_code == 422
        too_big = client.post("/v1/jobs", json={"prompt": "A lamp.", "seconds": 2, "size": "100000x100000"})
        assert too_big.status_code == 422
        page = client.get("/v1/jobs", params={"limit": 1_000_000})
        assert page.status_code == 422


def test_secrets_never_reach_logs_traces_or_metrics(stack: Stack, attacker: Tenant) -> None:
    with _client(stack, attacker.api_key) as client:
        created = client.post("/v1/webhook_endpoints", json={"url": PUBLIC_HOOK})
        assert created.status_code == 200, created.text
        secret = created.json()["signing_secret"]
        job = submit(client, prompt="A kite over a beach.", seconds=2, size="640x360", seed=9)
        wait_for(client, job["id"], {"completed", "failed"})
    forged = attacker.api_key[:-4] + "AAAA"
    httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {forged}"}, timeout=15)
    time.sleep(1.5)  # log lines and trace batches are flushed asynchronously

    secret_material = {"api key": attacker.api_key, "forged key": forged, "webhook secret": secret,
                       "webhook secret body": secret.removeprefix("whsec_"), "operator token": stack.operator_token}
    run_dir = Path(stack.run_dir)
    scanned = [path for pattern in ("logs/*.log", "traces/*.jsonl") for path in run_dir.glob(pattern)]
    assert scanned, "no logs or traces to scan"
    metrics = [httpx.get(f"{service.url}/metrics", timeout=15).text for service in stack.processes()]
    haystacks: list[tuple[str, Any]] = [(str(path), path.read_text(errors="replace")) for path in scanned]
    haystacks += [(f"metrics of process {i}", text) for i, text in enumerate(metrics)]
    for where, text in haystacks:
        for what, value in secret_material.items():
            assert value not in text, f"the {what} appears in {where}"
