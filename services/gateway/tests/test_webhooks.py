"""Webhooks: Standard Webhooks signatures (verified by the `standardwebhooks` package), durable
delivery with retries after a receiver that fails then recovers, dead-lettering and replay, the SSRF guard."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from reelforge_gateway import webhooks
from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway

BACKOFF = webhooks.Backoff(base_seconds=0.05, max_seconds=0.2, max_attempts=4)


class Receiver:
    """A real HTTP receiver that answers 500 to the first `failures` deliveries."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 500 if len(receiver.received) < receiver.failures else 204
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings(webhook_allowed_hosts=["127.0.0.1"])


def _api(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=10)


def _deliver_all(gateway: Gateway, rounds: int = 60) -> None:
    import time

    async def one_pass() -> int:
        async with webhooks.delivery_client(webhooks.url_guard(["127.0.0.1"]), 5) as client:
            return await webhooks.deliver_due(gateway.pool, client, BACKOFF, gateway.secret_box)

    for _ in range(rounds):
        gateway.run(one_pass())
        pending = gateway.run(gateway.pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"))
        if not pending:
            return
        time.sleep(0.05)


def test_signed_delivery_verifies_with_standardwebhooks(gateway: Gateway, receiver: Receiver) -> None:
    api = _api(gateway)
    created = api.post("/v1/webhook_endpoints", json={"url": receiver.url,
                                                      "events": ["job.completed", "video.completed"]})
    assert created.status_code == 200, created.text
    endpoint = created.json()
    assert endpoint["signing_secret"].startswith("whsec_")
    assert "signing_secret" not in api.get("/v1/webhook_endpoints").json()["data"][0]  # shown once
    job = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4, "metadata": {"customer": "c9"}}).json()
    gateway.advance(job["id"], "rendering", 50)
    _deliver_all(gateway)
    assert receiver.received == []  # not subscribed to progress
    gateway.advance(job["id"], "completed", 100, output_uri="cas://sha256/" + "0" * 64)
    _deliver_all(gateway)
    assert len(receiver.received) == 2
    verifier = Webhook(endpoint["signing_secret"])
    payloads = {}
    for headers, body, _ in receiver.received:
        payload = verifier.verify(body, headers)
        payloads[payload["type"]] = payload
    native = payloads["job.completed"]["data"]
    assert (native["id"], native["status"], native["metadata"]) == (job["id"], "completed", {"customer": "c9"})
    assert payloads["video.completed"]["data"] == {"id": job["id"]}
    assert payloads["video.completed"]["object"] == "event"
    headers, body, _ = receiver.received[0]
    with pytest.raises(WebhookVerificationError):  # a tampered body fails verification
        verifier.verify(body + b" ", headers)


def test_retries_until_the_receiver_recovers(gateway: Gateway) -> None:
    receiver = Receiver(failures=2)
    before = {outcome: _attempts(outcome) for outcome in ("delivered", "retry")}
    try:
        api = _api(gateway)
        endpoint = api.post("/v1/webhook_endpoints", json={"url": receiver.url}).json()
        job = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4}).json()
        gateway.advance(job["id"], "failed", 0, error_code="timeout", error_message="slow")
        _deliver_all(gateway)
        assert [status for _, _, status in receiver.received] == [500, 500, 204]
        assert len({headers["webhook-id"] for headers, _, _ in receiver.received}) == 1  # same id on every retry
        for headers, body, _ in receiver.received:
            Webhook(endpoint["signing_secret"]).verify(body, headers)
        deliveries = api.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries").json()["data"]
        assert [(d["state"], d["attempts"], d["last_status"]) for d in deliveries] == [("delivered", 3, 204)]
        assert (_attempts("delivered") - before["delivered"], _attempts("retry") - before["retry"]) == (1, 2)
    finally:
        receiver.close()


def _attempts(outcome: str) -> float:
    value = REGISTRY.get_sample_value("reelforge_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


def test_gives_up_after_max_attempts_then_replays(gateway: Gateway) -> None:
    receiver = Receiver(failures=100)
    try:
        api = _api(gateway)
        endpoint = api.post("/v1/webhook_endpoints", json={"url": receiver.url}).json()
        job = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4}).json()
        gateway.advance(job["id"], "failed", 0, error_code="timeout", error_message="slow")
        _deliver_all(gateway)
        assert len(receiver.received) == BACKOFF.max_attempts
        delivery = api.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries").json()["data"][0]
        assert delivery["state"] == "dead"
        receiver.failures = 0
        replayed = api.post(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/{delivery['id']}/replay")
        assert replayed.status_code == 202
        _deliver_all(gateway)
        assert receiver.received[-1][2] == 204
        assert api.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries").json()["data"][0]["state"] == "delivered"
    finally:
        receiver.close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:8080/x", "http://localhost:9/x", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/x", "http://[::1]/x", "ftp://example.com/x", "http://user:pw@127.0.0.1/x",
])
@pytest.mark.asyncio
async def test_ssrf_guard_refuses_internal_urls(url: str) -> None:
    with pytest.raises(webhooks.UrlForbidden):
        await webhooks.url_guard(["127.0.0.1"] if "user" in url else []).check(url)


def test_ssrf_guard_on_the_api(gateway: Gateway) -> None:
    refused = _api(gateway).post("/v1/webhook_endpoints", json={"url": "http://169.254.169.254/latest"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "webhook_url_forbidden"


def test_endpoints_are_tenant_scoped(gateway: Gateway, receiver: Receiver) -> None:
    api = _api(gateway)
    endpoint = api.post("/v1/webhook_endpoints", json={"url": receiver.url}).json()
    _, other_key = gateway.new_tenant("other")
    other = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {other_key}"})
    assert other.get("/v1/webhook_endpoints").json()["data"] == []
    assert other.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries").status_code == 404
    assert other.delete(f"/v1/webhook_endpoints/{endpoint['id']}").status_code == 404
    # Another tenant's job never reaches this tenant's endpoint.
    theirs = other.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4}).json()
    gateway.advance(theirs["id"], "completed", 100, output_uri="cas://sha256/" + "0" * 64)
    _deliver_all(gateway)
    assert receiver.received == []
    assert api.delete(f"/v1/webhook_endpoints/{endpoint['id']}").json()["deleted"] is True
    assert api.get("/v1/webhook_endpoints").json()["data"] == []
