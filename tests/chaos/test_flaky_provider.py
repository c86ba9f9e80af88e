"""A flaky provider that also hangs for a while, under load, with the orchestrator killed -9 in the middle:
the fal queue fake (real HTTP) is routed first for the local model, with latency, a 429 every few requests
and a 5% failure rate; the local animatic pool is the failover. For a while (until two jobs hang there) the provider
accepts jobs and never finishes them: those renders end with `timeout` at the provider's deadline and the jobs fail over
(the orchestrator retries `timeout` on another pool). Every job reaches a terminal state, nothing is charged
twice, failed jobs' credit is released, and the provider never saw the same submission twice (the fake
counts them per idempotency key)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reelforge_local.stack import Stack
from reelforge_render.fakes.common import Behaviour
from tests.chaos import harness
from tests.conftest import db_fetch

PROVIDER = "flaky-fal"
JOBS = 16
RENDER_TIMEOUT_SECONDS = 8.0  # the provider's deadline (production default: 30 min)


@pytest.fixture
def flaky_provider(stack: Stack) -> Iterator[str]:
    behaviour = Behaviour(latency_s=1.5, queue_s=0.3, throttle_every=4, retry_after_s=0.5, failure_rate=0.05,
                          api_key="chaos-fal-key")
    with harness.fake_provider_first(stack, behaviour, PROVIDER, timeout_seconds=RENDER_TIMEOUT_SECONDS) as url:
        yield url


def test_a_flaky_then_hanging_provider_and_a_leader_kill_lose_nothing(stack: Stack, flaky_provider: str) -> None:
    tenants = [stack.create_tenant(f"flaky-{i}", credit_usd="10") for i in range(4)]
    hang = harness.hanging_provider(flaky_provider, min_hung=2)
    kill = harness.kill_and_restart_service("orchestrator")

    def hang_then_kill(platform: Stack) -> None:
        hang.inject(platform)
        kill.inject(platform)

    outcome = harness.run(stack, tenants, harness.Fault("provider hangs + kill -9 orchestrator", hang_then_kill),
                          jobs=JOBS, seed=23, seconds=4,  # a duration the fal model accepts
                          # the hang starts with the load: once every job is dispatched, none is left to hang
                          fault_window=(0.0, 0.2))
    seen = harness.provider_report(flaky_provider)
    timed_out = db_fetch(stack, "render", "SELECT count(*) AS n FROM renders WHERE provider = $1"
                         " AND error_code = 'timeout'", PROVIDER)[0]["n"]
    print("\n" + harness.table(stack, [outcome]))
    print(f"provider: {seen['created']} jobs created, {seen['stuck']} hung, {timed_out} renders timed out, "
          f"{seen['throttled']} requests answered 429, duplicate submissions {seen['duplicates']}")
    assert len(outcome.accepted) == JOBS
    assert outcome.violations == [], outcome.violations
    assert seen["created"] > 0, "nothing was routed to the flaky provider: the scenario tested nothing"
    assert seen["throttled"] > 0
    assert seen["stuck"] > 0, "no job hung: the scenario tested nothing"
    assert timed_out >= seen["stuck"], "a hung render did not end with `timeout`"
    assert seen["duplicates"] == [], seen["duplicates"]
