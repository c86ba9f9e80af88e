"""A pool whose provider starts failing, through the whole platform: the fal queue fake (real HTTP) is
routed first for the local model and fails every job; its circuit breaker opens, traffic moves to the
animatic pool, and once the provider recovers a half-open probe closes the breaker and traffic returns.

The failing pool gets a short breaker of its own through the admin gRPC API (3 failures of the last 4
open it for 4 s, one probe closes it); the running leader applies it at once, no restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import httpx
import pytest

from reelforge.orchestrator.v1 import admin_pb2, admin_pb2_grpc
from reelforge_core.grpc_auth import bearer
from reelforge_local.stack import Stack, Tenant
from reelforge_render.fakes import fal
from reelforge_render.fakes.common import Behaviour, serving
from tests.conftest import db_fetch
from tests.e2e.helpers import submit, wait_for

pytestmark = pytest.mark.stack

POOL = "breaker-fal"
OPEN_SECONDS = 4.0
SHORT_BREAKER = admin_pb2.CircuitBreakerPolicy(window=4, min_calls=3, error_rate=0.5, open_seconds=OPEN_SECONDS,
                                               half_open_probes=1)


class Admin:
    """The orchestrator admin API with the operator token."""

    def __init__(self, stack: Stack) -> None:
        self.channel = grpc.insecure_channel(stack.admin_target)
        self.stub = admin_pb2_grpc.OrchestratorAdminStub(self.channel)
        self.metadata = bearer(stack.operator_token)

    def pools(self) -> dict[str, admin_pb2.PoolStatus]:
        return {p.pool_id: p for p in self.stub.GetPools(admin_pb2.GetPoolsRequest(), timeout=5,
                                                         metadata=self.metadata).pools}

    def circuit(self) -> str:
        return self.pools()[POOL].circuit


@pytest.fixture
def admin(stack: Stack) -> Iterator[Admin]:
    client = Admin(stack)
    yield client
    client.channel.close()


@dataclass(frozen=True)
class Failing:
    url: str        # the fal fake's
    tenant: Tenant


@pytest.fixture
def failing_provider(stack: Stack, admin: Admin) -> Iterator[Failing]:
    with (serving(fal.create_app(Behaviour(latency_s=0.3, failure_rate=1.0, api_key="breaker-fal-key"))) as url,
          ThreadPoolExecutor(1) as background):
        # Two slow subprocesses (the tenant's CLI, the adapter's restart) run side by side.
        tenant = background.submit(stack.create_tenant, "breaker-tenant", credit_usd="20")
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
        routes = admin.stub.GetRoutes(admin_pb2.GetRoutesRequest(), timeout=5, metadata=admin.metadata).routes
        route = next(list(r.pool_ids) for r in routes if r.model == "animatic")
        admin.stub.SetPool(admin_pb2.PoolSpec(pool_id=POOL, provider=POOL, model="animatic", slots=4,
                                              breaker=SHORT_BREAKER), timeout=5, metadata=admin.metadata)
        admin.stub.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id=POOL, mode=admin_pb2.POOL_MODE_RESUME),
                               timeout=5, metadata=admin.metadata)  # paused by an earlier run on this stack
        admin.stub.SetRoute(admin_pb2.Route(model="animatic", pool_ids=[POOL, *(p for p in route if p != POOL)]),
                            timeout=5, metadata=admin.metadata)
        # The leader applies admin changes at once; the instance asked may be a standby for a moment after
        # an earlier test's takeover, in which case the leader reloads within its reload interval.
        deadline = time.monotonic() + 15
        while (status := admin.pools()[POOL]).circuit != "closed" or status.breaker != SHORT_BREAKER:
            assert time.monotonic() < deadline, f"the leader did not take the pool's breaker: {status}"
            time.sleep(0.1)
        try:
            yield Failing(url, tenant.result(timeout=120))
        finally:
            admin.stub.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id=POOL, mode=admin_pb2.POOL_MODE_PAUSE),
                                   timeout=5, metadata=admin.metadata)
            admin.stub.SetRoute(admin_pb2.Route(model="animatic", pool_ids=[p for p in route if p != POOL]),
                                timeout=5, metadata=admin.metadata)


def _created(url: str) -> int:
    created: int = httpx.get(f"{url}/_fake/stats", timeout=10).json()["created"]
    return created


def test_failing_pool_opens_its_breaker_moves_traffic_and_probes_close_it(
        stack: Stack, admin: Admin, failing_provider: Failing) -> None:
    fake = failing_provider.url
    api = httpx.Client(base_url=stack.gateway_url,
                       headers={"Authorization": f"Bearer {failing_provider.tenant.api_key}"}, timeout=15)

    def job(label: str) -> str:
        return str(submit(api, prompt=f"Breaker {label}", seconds=4, size="640x360")["id"])

    try:
        # 1. The provider fails every job: after three failures the breaker opens; the failed jobs go
        #    to the next pool after their backoff and complete there. (The pool has 4 slots: all three go to it.)
        first = [job(f"first {i}") for i in range(3)]
        deadline = time.monotonic() + 30
        while admin.circuit() != "open":
            assert time.monotonic() < deadline, f"the breaker never opened: {admin.circuit()!r}"
            time.sleep(0.05)
        opened = time.monotonic()
        created_when_open = _created(fake)
        assert created_when_open >= 3

        # 2. While it is open, new work goes straight to the animatic pool.
        during = [job("while open")]
        for job_id in during:
            wait_for(api, job_id, {"rendering", "postprocessing", "completed", "failed"}, timeout=30)
        if time.monotonic() - opened < OPEN_SECONDS:  # still inside the open window: nothing reached the provider
            assert _created(fake) == created_when_open
        for job_id in first + during:
            assert wait_for(api, job_id, {"completed", "failed"}, timeout=120)["status"] == "completed"
        rows = db_fetch(stack, "orchestrator", "SELECT job_id, avoid_pools FROM jobs WHERE job_id = ANY($1)",
                        first + during)
        failed_over = [r["job_id"] for r in rows if POOL in r["avoid_pools"]]
        assert len(failed_over) >= 3, rows  # jobs that failed on the pool finished elsewhere

        # 3. The provider recovers; after the cool-down a probe goes through, succeeds and closes the breaker.
        httpx.post(f"{fake}/_fake/behaviour", json={"failure_rate": 0.0}, timeout=10).raise_for_status()
        created_before_probe = _created(fake)
        time.sleep(max(0.0, OPEN_SECONDS - (time.monotonic() - opened)))
        probes: list[str] = []
        deadline = time.monotonic() + 60
        while admin.circuit() != "closed":
            assert time.monotonic() < deadline, f"the breaker never closed: {admin.circuit()!r}"
            if not probes or wait_for(api, probes[-1], {"rendering", "postprocessing", "completed", "failed"},
                                      timeout=30)["status"] != "rendering":
                probes.append(job(f"probe {len(probes)}"))
            time.sleep(0.2)
        assert _created(fake) > created_before_probe, "no probe reached the recovered provider"

        # 4. Closed again: the pool takes new work.
        after = [job("after closing")]
        for job_id in probes + after:
            assert wait_for(api, job_id, {"completed", "failed"}, timeout=120)["status"] == "completed"
        assert _created(fake) >= created_before_probe + 2
        # Every job completed once: one completion each, whichever pools it went through.
        jobs = first + during + probes + after
        done = db_fetch(stack, "orchestrator", "SELECT job_id, count(*) AS n FROM job_transitions"
                        " WHERE state = 'completed' AND job_id = ANY($1) GROUP BY job_id", jobs)
        assert sorted((r["job_id"], r["n"]) for r in done) == sorted((job_id, 1) for job_id in jobs)
        # The short breaker was this pool's own: the others keep the process defaults.
        animatic = admin.pools()["animatic"]
        assert animatic.breaker != SHORT_BREAKER and animatic.breaker_overrides == admin_pb2.CircuitBreakerPolicy()
    finally:
        api.close()
