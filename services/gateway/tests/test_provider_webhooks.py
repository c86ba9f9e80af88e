"""POST /v1/provider-webhooks/{provider}: each provider's signing scheme verified (signed here by independent
code: the standardwebhooks library, the WaveSpeedAI recipe, an ED25519 key behind a JWKS URL), bad ones refused
with problem+json (never a 500), verified deliveries written once to the outbox as render.v1.provider-event."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks import Webhook

from reelforge.render.v1 import render_pb2
from reelforge_core import topics
from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway

SECRET = "whsec_" + base64.b64encode(b"provider-webhook-test-secret-32b").decode()
FAL_KEY = Ed25519PrivateKey.generate()
BODY = json.dumps({"id": "pred_1", "status": "succeeded", "output": ["https://cdn.example/v.mp4"]}).encode()


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    x = base64.urlsafe_b64encode(FAL_KEY.public_key().public_bytes_raw()).rstrip(b"=").decode()
    document = json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway_settings(jwks_url: str, monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    monkeypatch.setenv("TEST_PROVIDER_WEBHOOK_SECRET", SECRET)
    standard = {"scheme": "standard", "secret_env": "TEST_PROVIDER_WEBHOOK_SECRET"}
    return make_settings(provider_webhooks={
        "replicate": standard, "sora": standard,
        "wavespeed": {"scheme": "wavespeed", "secret_env": "TEST_PROVIDER_WEBHOOK_SECRET"},
        "fal": {"scheme": "fal", "jwks_url": jwks_url}})


def _standard(body: bytes, msg_id: str = "msg_1", at: datetime.datetime | None = None) -> dict[str, str]:
    at = at or datetime.datetime.now(datetime.UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(SECRET).sign(msg_id, at, body.decode())}


def _wavespeed(body: bytes, msg_id: str = "ws1", at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(at or time.time()))
    digest = hmac.new(secret.removeprefix("whsec_").encode(), f"{msg_id}.{timestamp}.".encode() + body,
                      hashlib.sha256).hexdigest()
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": f"v3,{digest}"}


def _fal(body: bytes, request_id: str = "req-1", key: Ed25519PrivateKey = FAL_KEY,
         at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at or time.time()))
    message = "\n".join([request_id, "user-1", timestamp, hashlib.sha256(body).hexdigest()]).encode()
    return {"x-fal-webhook-request-id": request_id, "x-fal-webhook-user-id": "user-1",
            "x-fal-webhook-timestamp": timestamp, "x-fal-webhook-signature": key.sign(message).hex()}


SIGNERS = {"replicate": _standard, "sora": _standard, "wavespeed": _wavespeed, "fal": _fal}


def _post(gateway: Gateway, provider: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/provider-webhooks/{provider}", content=body,
                      headers={"content-type": "application/json", **headers}, timeout=10)


def _events(gateway: Gateway) -> list[render_pb2.ProviderEvent]:
    rows = gateway.run(gateway.pool.fetch("SELECT payload FROM outbox WHERE topic = $1 ORDER BY id",
                                          topics.RENDER_PROVIDER_EVENT))
    events = []
    for row in rows:
        event = render_pb2.ProviderEvent()
        event.ParseFromString(row["payload"])
        events.append(event)
    return events


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_a_verified_delivery_is_handed_on_once(gateway: Gateway) -> None:
    for provider, signer in SIGNERS.items():
        before = len(_events(gateway))
        headers = signer(BODY)  # type: ignore[operator]
        assert _post(gateway, provider, BODY, headers).status_code == 202
        assert _post(gateway, provider, BODY, headers).status_code == 202  # the same delivery again: a replay
        events = _events(gateway)[before:]
        assert [(e.provider, e.body) for e in events] == [(provider, BODY)], provider
        assert events[0].delivery_id


def test_bad_deliveries_are_refused_with_problem_details(gateway: Gateway) -> None:
    before = len(_events(gateway))
    for provider, signer in SIGNERS.items():
        headers = signer(BODY)  # type: ignore[operator]
        forged = BODY.replace(b"succeeded", b"failed\x20\x20")
        _assert_problem(_post(gateway, provider, forged, headers), 401, "webhook_signature_invalid")
        old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)) if signer is _standard \
            else time.time() - 600
        _assert_problem(_post(gateway, provider, BODY, signer(BODY, at=old)), 400,  # type: ignore[operator]
                        "webhook_timestamp_out_of_tolerance")
        _assert_problem(_post(gateway, provider, BODY, {}), 400, "webhook_headers_missing")
        garbled = {k: ("soon" if "timestamp" in k else v) for k, v in signer(BODY).items()}  # type: ignore[operator]
        _assert_problem(_post(gateway, provider, BODY, garbled), 400, "webhook_timestamp_invalid")

    _assert_problem(_post(gateway, "fal", BODY, _fal(BODY, key=Ed25519PrivateKey.generate())), 401,
                    "webhook_signature_invalid")
    sig = _fal(BODY)
    sig["x-fal-webhook-signature"] = "zz" * 64
    _assert_problem(_post(gateway, "fal", BODY, sig), 401, "webhook_signature_invalid")
    other = "whsec_" + base64.b64encode(b"another-secret-another-secret-32").decode()
    _assert_problem(_post(gateway, "wavespeed", BODY, _wavespeed(BODY, secret=other)), 401,
                    "webhook_signature_invalid")
    # A Standard Webhooks signature is not a WaveSpeedAI one (v1/base64 vs v3/hex, decoded key vs raw).
    _assert_problem(_post(gateway, "wavespeed", BODY, _standard(BODY)), 401, "webhook_signature_invalid")
    _assert_problem(_post(gateway, "nobody", BODY, _standard(BODY)), 404, "provider_not_found")
    bad = b"{not json"
    _assert_problem(_post(gateway, "replicate", bad, _standard(bad)), 400, "malformed_json")
    assert len(_events(gateway)) == before
