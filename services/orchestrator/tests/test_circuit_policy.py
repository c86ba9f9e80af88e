"""A pool's own breaker policy: overrides over the process defaults, their validation, and a live breaker
(and a live scheduler pool) taking a changed policy without losing its state."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from reelforge_orchestrator.scheduling.circuit import (
    CircuitBreaker,
    CircuitOverrides,
    CircuitPolicy,
    CircuitState,
    policy_problems,
)
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.fair_queue import Scheduler, SchedulingPolicy
from reelforge_orchestrator.scheduling.pools import PoolSpec
from reelforge_orchestrator.scheduling.router import Job
from reelforge_orchestrator.settings import OrchestratorSettings

DEFAULTS = CircuitPolicy(window=20, min_calls=5, error_rate_to_open=0.5, open_seconds=30.0, half_open_probes=2)


def test_overrides_replace_only_the_fields_they_set() -> None:
    assert CircuitOverrides().over(DEFAULTS) is DEFAULTS
    assert CircuitOverrides().is_default and not CircuitOverrides(window=4).is_default
    assert CircuitOverrides(window=4, open_seconds=2.5).over(DEFAULTS) == CircuitPolicy(
        window=4, min_calls=5, error_rate_to_open=0.5, open_seconds=2.5, half_open_probes=2)


@pytest.mark.parametrize(("overrides", "problem"), [
    (CircuitOverrides(window=0), "window must be between 1 and 10000 outcomes (got 0)"),
    (CircuitOverrides(window=10_001), "window must be between 1 and 10000 outcomes (got 10001)"),
    (CircuitOverrides(min_calls=0), "min_calls must be between 1 and 10000 (got 0)"),
    (CircuitOverrides(error_rate_to_open=0.0), "error_rate must be above 0 and at most 1 (got 0.0)"),
    (CircuitOverrides(error_rate_to_open=1.5), "error_rate must be above 0 and at most 1 (got 1.5)"),
    (CircuitOverrides(error_rate_to_open=math.nan), "error_rate must be above 0 and at most 1 (got nan)"),
    (CircuitOverrides(open_seconds=-1.0), "open_seconds must be above 0 and at most 86400 (got -1.0)"),
    (CircuitOverrides(open_seconds=math.inf), "open_seconds must be above 0 and at most 86400 (got inf)"),
    (CircuitOverrides(half_open_probes=0), "half_open_probes must be between 1 and 1000 (got 0)"),
    (CircuitOverrides(min_calls=30),
     "min_calls 30 exceeds window 20 (the process default): the breaker could never open"),
    (CircuitOverrides(window=3), "min_calls 5 (the process default) exceeds window 3: the breaker could never open"),
    (CircuitOverrides(window=3, min_calls=4), "min_calls 4 exceeds window 3: the breaker could never open"),
])
def test_each_bad_value_is_named(overrides: CircuitOverrides, problem: str) -> None:
    assert policy_problems(overrides, DEFAULTS) == [problem]


def test_every_problem_is_reported_at_once_and_good_policies_pass() -> None:
    problems = policy_problems(CircuitOverrides(window=0, error_rate_to_open=2.0, half_open_probes=0), DEFAULTS)
    assert [p.split(" ")[0] for p in problems] == ["window", "error_rate", "half_open_probes"]
    assert policy_problems(CircuitOverrides(), DEFAULTS) == []
    assert policy_problems(CircuitOverrides(window=4, min_calls=3, error_rate_to_open=1.0, open_seconds=86_400,
                                            half_open_probes=1), DEFAULTS) == []


def test_process_defaults_that_could_never_open_are_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="circuit_min_calls \\(30\\) exceeds circuit_window \\(20\\)"):
        OrchestratorSettings(circuit_min_calls=30, circuit_window=20)


def test_a_live_breaker_takes_a_new_policy_and_keeps_its_state() -> None:
    breaker = CircuitBreaker(CircuitPolicy(window=6, min_calls=6, error_rate_to_open=0.6, open_seconds=30))
    for ok in [True, False, False, True]:
        breaker.record(ok, 0.0)
    assert breaker.state is CircuitState.CLOSED
    # A smaller window keeps the most recent outcomes (F, F, T), judged at the next one: F, T, F opens it.
    breaker.set_policy(CircuitPolicy(window=3, min_calls=3, error_rate_to_open=0.6, open_seconds=30))
    assert breaker.state is CircuitState.CLOSED and breaker.error_rate == pytest.approx(2 / 3)
    breaker.record(False, 10.0)
    assert breaker.state is CircuitState.OPEN and not breaker.allows(12.0)
    # Open: a shorter cool-down counts from when it opened, so probes may go at once.
    breaker.set_policy(CircuitPolicy(window=3, min_calls=3, error_rate_to_open=0.6, open_seconds=1, half_open_probes=3))
    assert breaker.state is CircuitState.OPEN
    assert breaker.allows(12.0) and breaker.state is CircuitState.HALF_OPEN
    breaker.on_dispatch()
    breaker.record(True, 13.0)
    assert breaker.state is CircuitState.HALF_OPEN  # 1 of 3 probes
    # Half-open: fewer probes needed than already succeeded closes it.
    breaker.set_policy(CircuitPolicy(window=3, min_calls=3, error_rate_to_open=0.6, open_seconds=1, half_open_probes=1))
    assert breaker.state is CircuitState.CLOSED and breaker.error_rate == 0.0


def _pool(pool_id: str, cost: int, circuit: CircuitOverrides | None = None) -> PoolSpec:
    return PoolSpec(pool_id, pool_id.split("/")[0], "m", slots=10, cost_micros_per_second={"720p": cost},
                    circuit=circuit or CircuitOverrides())


def _fail_on(s: Scheduler, pool_id: str, now: float) -> None:
    job = Job(f"j{now}", "t", "m", 4.0, 1280, 720, now, None)
    s.submit(job, now)
    assert [d.pool_id for d in s.tick(now).dispatched] == [pool_id]
    s.render_done(job.job_id, now + 0.5, ok=False, retriable=True, code="provider_error")


def test_a_live_pool_uses_its_own_policy_over_the_defaults_and_a_change_applies_at_once() -> None:
    s = Scheduler([TenantContract("t", max_concurrent=100, requests_per_minute=10_000)],
                  [_pool("cheap/m", 1), _pool("dear/m", 5)], {"m": ["cheap/m", "dear/m"]},
                  SchedulingPolicy(circuit=DEFAULTS, max_attempts=1))
    cheap = s.pools["cheap/m"]
    for now in (0.0, 1.0):
        _fail_on(s, "cheap/m", now)
    assert cheap.circuit.state is CircuitState.CLOSED  # the defaults want 5 outcomes
    # The operator gives the cheap pool a short breaker: the leader upserts the changed spec.
    s.upsert_pool(_pool("cheap/m", 1, CircuitOverrides(window=3, min_calls=3, open_seconds=5, half_open_probes=1)))
    assert s.pools["cheap/m"] is cheap  # the same live pool, not a fresh one
    assert cheap.circuit.policy == CircuitPolicy(window=3, min_calls=3, error_rate_to_open=0.5, open_seconds=5,
                                                 half_open_probes=1)
    _fail_on(s, "cheap/m", 2.0)  # the third failure: the two before the change still count
    assert cheap.circuit.state is CircuitState.OPEN
    assert s.pools["dear/m"].circuit.policy == DEFAULTS  # other pools keep the process defaults
    _fail_on(s, "dear/m", 3.0)  # open: traffic moves to the next pool
    assert cheap.circuit.allows(8.0) and cheap.circuit.state is CircuitState.HALF_OPEN
    # Back to the defaults (the stored columns set to NULL): the live breaker keeps its state.
    s.upsert_pool(_pool("cheap/m", 1))
    assert cheap.circuit.policy == DEFAULTS and cheap.circuit.state is CircuitState.HALF_OPEN
