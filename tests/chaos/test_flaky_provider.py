"""A flaky provider under load, with the orchestrator killed -9 in the middle: the fal queue fake (real
HTTP) is routed first for the local model, with latency, a 429 every few requests and a 5% failure
rate; the local animatic pool is the failover. Every job reaches a terminal state, nothing is charged
twice, and the provider never saw the same submission twice (the fake counts them per idempotency key)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from reelforge_local.stack import Stack
from reelforge_render.fakes import fal
from reelforge_render.fakes.common import Behaviour, serving
from tests.chaos import harness

PROVIDER = "flaky-fal"
JOBS = 16
CONFIG_RELOAD_SECONDS = 6  # the orchestrator leader reloads pools and routes every 5 s


@pytest.fixture
def flaky_provider(stack: Stack) -> Iterator[str]:
    behaviour = Behaviour(latency_s=1.5, queue_s=0.3, throttle_every=4, retry_after_s=0.5, failure_rate=0.05,
                          api_key="chaos-fal-key")
    with serving(fal.create_app(behaviour)) as url:
        adapter = stack.services["render-adapter"]
        variable = "REELFORGE_RENDER_PROVIDERS"
        providers = json.loads(adapter.env.get(variable) or "{}")
        providers[PROVIDER] = {
            "kind": "fal", "base_url": url, "api_key_env": "REELFORGE_CHAOS_FAL_KEY", "model": "fal-ai/veo3/fast",
            "poll_interval_seconds": 0.3, "price_micros_per_second": 40_000,
            "allow_output_hosts": ["127.0.0.1/32", "::1/128"]}
        adapter.env.update({variable: json.dumps(providers), "REELFORGE_CHAOS_FAL_KEY": "chaos-fal-key"})
        adapter.stop()
        adapter.restart()
        stack.cli("orchestrator", "set-pool", PROVIDER, "--provider", PROVIDER, "--model", "animatic",
                  "--slots", "6", "--route-position", "0")
        time.sleep(CONFIG_RELOAD_SECONDS)
        try:
            yield url
        finally:
            stack.cli("orchestrator", "pool-mode", PROVIDER, "pause")
            time.sleep(CONFIG_RELOAD_SECONDS)


def test_flaky_provider_and_a_leader_kill_lose_nothing(stack: Stack, flaky_provider: str) -> None:
    tenants = [stack.create_tenant(f"flaky-{i}", credit_usd="10") for i in range(4)]
    outcome = harness.run(stack, tenants, harness.kill_and_restart_service("orchestrator"), jobs=JOBS, seed=23,
                          seconds=4)  # a duration the fal model accepts
    submissions = httpx.get(f"{flaky_provider}/_fake/submissions", timeout=10).json()
    stats = httpx.get(f"{flaky_provider}/_fake/stats", timeout=10).json()
    print("\n" + harness.table(stack, [outcome]))
    print(f"provider: {stats['created']} jobs created, {stats['throttled']} requests answered 429, "
          f"duplicate submissions {submissions['duplicates']}")
    assert len(outcome.accepted) == JOBS
    assert outcome.violations == [], outcome.violations
    assert stats["created"] > 0, "nothing was routed to the flaky provider: the scenario tested nothing"
    assert stats["throttled"] > 0
    assert submissions["duplicates"] == [], submissions
