"""A pool whose provider starts failing, through the whole platform: the fal queue fake (real HTTP) is
routed first for the local model and fails every job; its circuit breaker opens, traffic moves to the
animatic pool, and once the provider recovers a half-open probe closes the breaker and traffic returns.

The orchestrator runs with a short breaker (3 failures of the last 4 open it for 4 s, one probe closes
it) and reloads its configuration every second; both are restored afterwards."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from reelforge.orchestrator.v1 import admin_pb2, admin_pb2_grpc
from reelforge_core.grpc_auth import bearer
from reelforge_local.stack import Stack
from reelforge_render.fakes import fal
from reelforge_render.fakes.common import Behaviour, serving
from tests.conftest import db_fetch
from tests.e2e.helpers import submit, wait_for

pytestmark = pytest.mark.stack

POOL = "breaker-fal"
OPEN_SECONDS = 4.0
SHORT_BREAKER = {
    "REELFORGE_ORCHESTRATOR_CIRCUIT_WINDOW": "4",
    "REELFORGE_ORCHESTRATOR_CIRCUIT_MIN_CALLS": "3",
    "REELFORGE_ORCHESTRATOR_CIRCUIT_ERROR_RATE": "0.5",
    "REELFORGE_ORCHESTRATOR_CIRCUIT_OPEN_SECONDS": str(OPEN_SECONDS),
    "REELFORGE_ORCHESTRATOR_CIRCUIT_HALF_OPEN_PROBES": "1",
    "REELFORGE_ORCHESTRATOR_CONFIG_RELOAD_SECONDS": "1",
}


@pytest.fixture
def failing_provider(stack: Stack) -> Iterator[str]:
    with serving(fal.create_app(Behaviour(latency_s=0.3, failure_rate=1.0, api_key="breaker-fal-key"))) as url:
        adapter = stack.services["render-adapter"]
        variable = "REELFORGE_RENDER_PROVIDERS"
        providers = json.loads(adapter.env.get(variable) or "{}")
        providers[POOL] = {
            "kind": "fal", "base_url": url, "api_key_env": "REELFORGE_BREAKER_FAL_KEY", "model": "fal-ai/veo3/fast",
            "poll_interval_seconds": 0.2, "price_micros_per_second": 40_000,
            "allow_output_hosts": ["127.0.0.1/32", "::1/128"]}
        adapter.env.update({variable: json.dumps(providers), "REELFORGE_BREAKER_FAL_KEY": "breaker-fal-key"})
        adapter.stop()
        adapter.restart()
        saved = stack.services["orchestrator"].restart_with(dict(SHORT_BREAKER))
        stack.cli("orchestrator", "set-pool", POOL, "--provider", POOL, "--model", "animatic", "--slots", "4",
                  "--route-position", "0")
        time.sleep(2)  # the leader reloads pools and routes every second here
        try:
            yield url
        finally:
            stack.cli("orchestrator", "pool-mode", POOL, "pause")
            stack.services["orchestrator"].restart_with(saved)


def _circuit(admin: admin_pb2_grpc.OrchestratorAdminStub, token: str) -> str:
    pools = admin.GetPools(admin_pb2.GetPoolsRequest(), timeout=5, metadata=bearer(token)).pools
    return next(p.circuit for p in pools if p.pool_id == POOL)


def _created(url: str) -> int:
    created: int = httpx.get(f"{url}/_fake/stats", timeout=10).json()["created"]
    return created


def test_failing_pool_opens_its_breaker_moves_traffic_and_probes_close_it(
        stack: Stack, failing_provider: str) -> None:
    tenant = stack.create_tenant("breaker-tenant", credit_usd="20")
    api = httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {tenant.api_key}"},
                       timeout=15)
    channel = grpc.insecure_channel(stack.admin_target)
    admin = admin_pb2_grpc.OrchestratorAdminStub(channel)

    def job(label: str) -> str:
        return str(submit(api, prompt=f"Breaker {label}", seconds=4, size="640x360")["id"])

    try:
        # 1. The provider fails every job: after three failures the breaker opens; the failed jobs go
        #    to the next pool after their backoff and complete there. (The pool has 4 slots: all three go to it.)
        first = [job(f"first {i}") for i in range(3)]
        deadline = time.monotonic() + 30
        while _circuit(admin, stack.operator_token) != "open":
            assert time.monotonic() < deadline, f"the breaker never opened: {_circuit(admin, stack.operator_token)!r}"
            time.sleep(0.05)
        opened = time.monotonic()
        created_when_open = _created(failing_provider)
        assert created_when_open >= 3

        # 2. While it is open, new work goes straight to the animatic pool.
        during = [job("while open")]
        for job_id in during:
            wait_for(api, job_id, {"rendering", "postprocessing", "completed", "failed"}, timeout=30)
        if time.monotonic() - opened < OPEN_SECONDS:  # still inside the open window: nothing reached the provider
            assert _created(failing_provider) == created_when_open
        for job_id in first + during:
            assert wait_for(api, job_id, {"completed", "failed"}, timeout=120)["status"] == "completed"
        rows = db_fetch(stack, "orchestrator", "SELECT job_id, avoid_pools FROM jobs WHERE job_id = ANY($1)",
                        first + during)
        failed_over = [r["job_id"] for r in rows if POOL in r["avoid_pools"]]
        assert len(failed_over) >= 3, rows  # jobs that failed on the pool finished elsewhere

        # 3. The provider recovers; after the cool-down a probe goes through, succeeds and closes the breaker.
        httpx.post(f"{failing_provider}/_fake/behaviour", json={"failure_rate": 0.0}, timeout=10).raise_for_status()
        created_before_probe = _created(failing_provider)
        time.sleep(max(0.0, OPEN_SECONDS - (time.monotonic() - opened)))
        probes: list[str] = []
        deadline = time.monotonic() + 60
        while _circuit(admin, stack.operator_token) != "closed":
            assert time.monotonic() < deadline, f"the breaker never closed: {_circuit(admin, stack.operator_token)!r}"
            if not probes or wait_for(api, probes[-1], {"rendering", "postprocessing", "completed", "failed"},
                                      timeout=30)["status"] != "rendering":
                probes.append(job(f"probe {len(probes)}"))
            time.sleep(0.2)
        assert _created(failing_provider) > created_before_probe, "no probe reached the recovered provider"

        # 4. Closed again: the pool takes new work.
        after = [job("after closing")]
        for job_id in probes + after:
            assert wait_for(api, job_id, {"completed", "failed"}, timeout=120)["status"] == "completed"
        assert _created(failing_provider) >= created_before_probe + 2
    finally:
        channel.close()
        api.close()
