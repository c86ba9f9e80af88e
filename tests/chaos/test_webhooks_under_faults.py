"""Webhooks under faults: the partners' receiver is down while jobs finish and the gateway is killed
with -9 in the middle. Afterwards every finished job's event has arrived at least once, with a valid
Standard Webhooks signature, and the platform's other invariants hold (tests/chaos/harness.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from reelforge_local.stack import Stack, Tenant
from tests.chaos import harness

JOBS = 12
RECEIVER_DOWN_SECONDS = 15.0
# Compressed retry schedule for this test (production: 30 s doubling to 6 h over 14 attempts, > 24 h).
FAST_BACKOFF = {"REELFORGE_GATEWAY_WEBHOOK_BACKOFF_BASE_SECONDS": "0.5",
                "REELFORGE_GATEWAY_WEBHOOK_BACKOFF_MAX_SECONDS": "2"}


class Receiver:
    """A partner's endpoint: answers 503 while `down`, otherwise verifies and records each delivery."""

    def __init__(self) -> None:
        self.down = False
        self.secrets: dict[str, str] = {}  # tenant_id -> signing secret
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = receiver.accept(self.path.rsplit("/", 1)[-1], dict(self.headers.items()), body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accept(self, tenant_id: str, headers: dict[str, str], body: bytes) -> int:
        if self.down:
            self.refused += 1
            return 503
        try:
            event = Webhook(self.secrets[tenant_id]).verify(body, {k.lower(): v for k, v in headers.items()})
        except Exception:
            self.bad_signatures += 1
            return 400
        self.events.append(event)
        return 204

    def job_ids_with(self, event_type: str) -> dict[str, int]:
        seen: dict[str, int] = {}
        for event in self.events:
            if event["type"] == event_type:
                seen[event["data"]["id"]] = seen.get(event["data"]["id"], 0) + 1
        return seen


@pytest.fixture
def fast_retrying_gateway(stack: Stack) -> Iterator[None]:
    gateway = stack.services["gateway"]
    before = {name: gateway.env.get(name) for name in FAST_BACKOFF}
    gateway.env.update(FAST_BACKOFF)
    gateway.stop()
    gateway.restart()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                gateway.env.pop(name, None)
            else:
                gateway.env[name] = value
        gateway.stop()
        gateway.restart()


def test_every_finished_job_is_announced_once_the_receiver_is_back(stack: Stack, fast_retrying_gateway: None) -> None:
    receiver = Receiver()
    tenants = [stack.create_tenant(f"hooks-{i}", credit_usd="10") for i in range(2)]
    for tenant in tenants:
        receiver.secrets[tenant.tenant_id] = _subscribe(stack, tenant, f"{receiver.base_url}/{tenant.tenant_id}")

    def receiver_down_and_gateway_killed(platform: Stack) -> None:
        receiver.down = True
        time.sleep(RECEIVER_DOWN_SECONDS / 2)
        gateway = platform.services["gateway"]
        gateway.kill()
        gateway.restart(timeout=120)
        time.sleep(RECEIVER_DOWN_SECONDS / 2)
        receiver.down = False

    outcome = harness.run(stack, tenants, harness.Fault("receiver down + kill -9 gateway",
                                                        receiver_down_and_gateway_killed), jobs=JOBS, seed=11)
    assert outcome.violations == [], outcome.violations
    assert len(outcome.accepted) == JOBS

    wanted = {job: f"job.{view['status']}" for job, view in outcome.views.items()}
    deadline = time.monotonic() + 90
    missing = dict(wanted)
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        missing = {job: kind for job, kind in wanted.items() if job not in receiver.job_ids_with(kind)}
    print(f"\nwebhooks: {len(receiver.events)} delivered, {receiver.refused} refused while down, "
          f"{receiver.bad_signatures} bad signatures, {len(missing)} missing")
    assert receiver.refused > 0, "the receiver was never called while down: the scenario tested nothing"
    assert receiver.bad_signatures == 0
    assert not missing, f"events never delivered: {missing}"


def _subscribe(stack: Stack, tenant: Tenant, url: str) -> str:
    response = httpx.post(f"{stack.gateway_url}/v1/webhook_endpoints",
                          json={"url": url, "event_types": ["job.completed", "job.failed"]},
                          headers={"Authorization": f"Bearer {tenant.api_key}"}, timeout=15)
    assert response.status_code == 200, response.text
    secret: str = json.loads(response.text)["signing_secret"]
    return secret
