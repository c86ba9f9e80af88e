"""The scheduler core in simulated time: caps, fairness, priority, routing, failover, breakers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from reelforge_orchestrator.scheduling.circuit import CircuitBreaker, CircuitPolicy, CircuitState
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.fair_queue import Scheduler, SchedulingPolicy
from reelforge_orchestrator.scheduling.pools import PoolSpec, PoolState, resolution_class
from reelforge_orchestrator.scheduling.router import Job

_ids = iter(range(10**9))


def job(tenant: str, model: str = "m", seconds: float = 8.0, now: float = 0.0, deadline: float | None = None,
        size: tuple[int, int] = (1280, 720)) -> Job:
    return Job(f"j{next(_ids)}", tenant, model, seconds, size[0], size[1], now, deadline)


def pool(pool_id: str, slots: int = 4, cost: int = 100, model: str = "m", **kw: object) -> PoolSpec:
    costs = {"480p": cost, "720p": cost, "1080p": cost}
    return PoolSpec(pool_id=pool_id, provider=pool_id.split("/")[0], model=model, slots=slots,
                    cost_micros_per_second=costs, **kw)  # type: ignore[arg-type]


def finish_all(s: Scheduler, job_ids: list[str], now: float) -> None:
    for job_id in job_ids:
        s.render_done(job_id, now, ok=True, output_seconds=8.0, finish_job=True)


def test_weighted_shares_follow_weights_when_backlogged() -> None:
    contracts = [TenantContract("a", weight=2, max_concurrent=100), TenantContract("b", weight=1, max_concurrent=100)]
    s = Scheduler(contracts,
                  [pool("p/m", slots=3)], {"m": ["p/m"]})
    for _ in range(2000):
        s.submit(job("a"), 0.0)
        s.submit(job("b"), 0.0)
    served: Counter[str] = Counter()
    now = 0.0
    running: list[str] = []
    for _ in range(900):
        for d in s.tick(now).dispatched:
            served[d.job.tenant_id] += 1
            running.append(d.job.job_id)
        now += 1.0
        finish_all(s, [running.pop(0)], now)
    share_a = served["a"] / (served["a"] + served["b"])
    assert abs(share_a - 2 / 3) <= 0.05 * (2 / 3)


def test_random_bursts_never_exceed_tenant_or_pool_caps() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        contracts = [TenantContract(f"t{i}", tier=rng.choice(["enterprise", "standard", "free"]),
                                    weight=rng.choice([1, 2, 3]), max_concurrent=rng.randint(1, 4),
                                    requests_per_minute=rng.randint(2, 30)) for i in range(10)]
        pools = [pool(f"p{i}/m", slots=rng.randint(1, 5), cost=rng.randint(1, 9)) for i in range(3)]
        s = Scheduler(contracts, pools, {"m": [p.pool_id for p in pools]})
        caps = {c.tenant_id: c for c in contracts}
        running: dict[str, tuple[str, str]] = {}
        starts: dict[str, list[float]] = {c.tenant_id: [] for c in contracts}
        now = 0.0
        for _ in range(50):
            s.submit(job(rng.choice(contracts).tenant_id), now)
        for _ in range(400):
            for d in s.tick(now).dispatched:
                running[d.job.job_id] = (d.job.tenant_id, d.pool_id)
                starts[d.job.tenant_id].append(now)
            per_tenant = Counter(t for t, _ in running.values())
            per_pool = Counter(p for _, p in running.values())
            for tenant_id, n in per_tenant.items():
                assert n <= caps[tenant_id].max_concurrent
                recent = [t for t in starts[tenant_id] if t > now - 60.0]
                assert len(recent) <= caps[tenant_id].requests_per_minute
            for p in pools:
                assert per_pool[p.pool_id] <= p.slots
            now += rng.uniform(0.1, 3.0)
            for job_id in [j for j in running if rng.random() < 0.3]:
                del running[job_id]
                s.render_done(job_id, now, ok=True, output_seconds=8.0, finish_job=True)
            if rng.random() < 0.3:
                s.submit(job(rng.choice(contracts).tenant_id, now=now), now)


def test_higher_tier_first_but_aging_prevents_starvation() -> None:
    policy = SchedulingPolicy(aging_seconds_per_tier=30.0)
    s = Scheduler([TenantContract("ent", tier="enterprise", max_concurrent=10),
                   TenantContract("free", tier="free", max_concurrent=10)],
                  [pool("p/m", slots=1)], {"m": ["p/m"]}, policy)
    late = job("free", now=0.0)
    s.submit(late, 0.0)
    now = 0.0
    order: list[str] = []
    for _ in range(200):
        s.submit(job("ent", now=now), now)
        for d in s.tick(now).dispatched:
            order.append(d.job.tenant_id)
            finish_all(s, [d.job.job_id], now + 1)
        now += 1.0
        if "free" in order:
            break
    assert order[0] == "ent"  # strict priority while the free job is young
    assert "free" in order  # ... but it is served once it has aged two tiers' worth
    assert 55 <= order.index("free") <= 65


def test_routes_to_cheapest_then_spills_when_full() -> None:
    s = Scheduler([TenantContract("t", max_concurrent=10)],
                  [pool("dear/m", slots=2, cost=500), pool("cheap/m", slots=2, cost=100)],
                  {"m": ["dear/m", "cheap/m"]})
    for _ in range(5):
        s.submit(job("t"), 0.0)
    pools = [d.pool_id for d in s.tick(0.0).dispatched]
    assert pools == ["cheap/m", "cheap/m", "dear/m", "dear/m"]
    assert len(s.waiting) == 1


def test_deadline_skips_slow_pool_and_expires_hopeless_jobs() -> None:
    s = Scheduler([TenantContract("t", max_concurrent=10)],
                  [pool("slow/m", cost=1, latency_seconds_per_output_second=20.0),
                   pool("fast/m", cost=9, latency_seconds_per_output_second=1.0)],
                  {"m": ["slow/m", "fast/m"]})
    s.submit(job("t", seconds=8, deadline=30.0), 0.0)   # slow needs 160 s, fast 8 s
    s.submit(job("t", seconds=8, deadline=5.0), 0.0)    # nobody can make it
    s.submit(job("t", seconds=8), 0.0)                 # no deadline: the cheap one
    decisions = s.tick(0.0)
    assert sorted(d.pool_id for d in decisions.dispatched) == ["fast/m", "slow/m"]
    assert [(e.state, e.code) for e in decisions.ended] == [("expired", "deadline_exceeded")]


def test_waiting_jobs_expire_at_their_deadline() -> None:
    s = Scheduler([TenantContract("t", max_concurrent=1, default_deadline_seconds=60.0)],
                  [pool("p/m", slots=1)], {"m": ["p/m"]})
    first, second = job("t"), job("t")
    s.submit(first, 0.0)
    s.submit(second, 0.0)
    assert [d.job for d in s.tick(0.0).dispatched] == [first]
    assert s.tick(59.0).ended == []
    ended = s.tick(61.0).ended
    assert [(e.job, e.state) for e in ended] == [(second, "expired")]
    assert not s.waiting


def test_retriable_failure_fails_over_to_another_pool_after_backoff() -> None:
    policy = SchedulingPolicy(max_attempts=3, backoff_first_seconds=2.0)
    s = Scheduler([TenantContract("t")], [pool("a/m", cost=1), pool("b/m", cost=2)], {"m": ["a/m", "b/m"]}, policy)
    j = job("t")
    s.submit(j, 0.0)
    assert [d.pool_id for d in s.tick(0.0).dispatched] == ["a/m"]
    outcome = s.render_done(j.job_id, 1.0, ok=False, retriable=True, code="provider_unavailable")
    assert outcome is not None and outcome.kind == "retry" and outcome.retry_in == 2.0
    assert s.tick(2.0).dispatched == []  # backing off
    again = s.tick(3.0).dispatched
    assert [(d.pool_id, d.attempt) for d in again] == [("b/m", 2)]
    outcome = s.render_done(j.job_id, 4.0, ok=False, retriable=True, code="provider_unavailable")
    assert outcome is not None and outcome.kind == "retry" and outcome.retry_in == 4.0
    assert [d.attempt for d in s.tick(8.0).dispatched] == [3]
    outcome = s.render_done(j.job_id, 9.0, ok=False, retriable=True, code="provider_unavailable")
    assert outcome is not None and outcome.kind == "failed" and "3 attempts" in outcome.message


@pytest.mark.parametrize("code", ["invalid_input", "content_policy"])
def test_non_retriable_errors_fail_fast_without_blaming_the_pool(code: str) -> None:
    s = Scheduler([TenantContract("t")], [pool("a/m"), pool("b/m")], {"m": ["a/m", "b/m"]})
    j = job("t")
    s.submit(j, 0.0)
    s.tick(0.0)
    outcome = s.render_done(j.job_id, 1.0, ok=False, retriable=True, code=code)
    assert outcome is not None and (outcome.kind, outcome.code) == ("failed", code)
    assert s.pools["a/m"].failures == 0 and s.pools["a/m"].in_use == 0


def test_circuit_opens_moves_traffic_and_probes_close_it() -> None:
    policy = SchedulingPolicy(circuit=CircuitPolicy(window=10, min_calls=4, error_rate_to_open=0.5,
                                                    open_seconds=30.0, half_open_probes=2), max_attempts=1)
    s = Scheduler([TenantContract("t", max_concurrent=100, requests_per_minute=10_000)],
                  [pool("cheap/m", slots=10, cost=1), pool("dear/m", slots=10, cost=5)], {"m": ["cheap/m", "dear/m"]},
                  policy)
    now = 0.0
    for _ in range(4):
        j = job("t", now=now)
        s.submit(j, now)
        assert [d.pool_id for d in s.tick(now).dispatched] == ["cheap/m"]
        s.render_done(j.job_id, now + 1, ok=False, retriable=True, code="provider_error")
        now += 2
    assert s.pools["cheap/m"].circuit.state is CircuitState.OPEN
    j = job("t", now=now)
    s.submit(j, now)
    assert [d.pool_id for d in s.tick(now).dispatched] == ["dear/m"]  # traffic moved
    now += 31  # cool-down over: two probes may go to the cheap pool
    probes = [job("t", now=now) for _ in range(3)]
    for p in probes:
        s.submit(p, now)
    assert [d.pool_id for d in s.tick(now).dispatched] == ["cheap/m", "cheap/m", "dear/m"]
    assert s.pools["cheap/m"].circuit.state is CircuitState.HALF_OPEN
    for p in probes[:2]:
        s.render_done(p.job_id, now + 1, ok=True, output_seconds=8.0, finish_job=True)
    assert s.pools["cheap/m"].circuit.state is CircuitState.CLOSED


def test_breaker_half_open_probe_failure_reopens() -> None:
    breaker = CircuitBreaker(CircuitPolicy(window=4, min_calls=2, error_rate_to_open=0.5, open_seconds=10))
    breaker.record(False, 0.0)
    breaker.record(False, 0.0)
    assert not breaker.allows(5.0)
    assert breaker.allows(11.0) and breaker.state is CircuitState.HALF_OPEN
    breaker.on_dispatch()
    breaker.record(False, 12.0)
    assert breaker.state is CircuitState.OPEN and not breaker.allows(15.0)


def test_gpu_pool_counts_gpus_and_estimates_from_gpu_seconds() -> None:
    gpu = PoolSpec("self/m", "self", "m", gpus=16, gpus_per_job=8)
    state = PoolState(gpu)
    # 60 s of 1080p at 8 GPU-s per output second on 8 GPUs: 60 s of wall time
    assert state.estimated_seconds(60, 1920, 1080) == pytest.approx(60.0)
    assert state.estimated_seconds(60, 1280, 720) == pytest.approx(60.0 * (1280 * 720) / (1920 * 1080))
    s = Scheduler([TenantContract("t", max_concurrent=10)], [gpu], {"m": ["self/m"]})
    for _ in range(3):
        s.submit(job("t"), 0.0)
    assert len(s.tick(0.0).dispatched) == 2
    assert s.pools["self/m"].in_use == 16


def test_cancel_waiting_and_rendering_jobs_free_their_places() -> None:
    s = Scheduler([TenantContract("t", max_concurrent=1)], [pool("p/m", slots=1)], {"m": ["p/m"]})
    running, queued, last = job("t"), job("t"), job("t")
    for j in (running, queued, last):
        s.submit(j, 0.0)
    s.tick(0.0)
    assert s.cancel(queued.job_id, 1.0) == "waiting"
    assert s.cancel(running.job_id, 1.0) == "rendering"
    assert s.cancel(running.job_id, 1.0) is None
    assert [d.job for d in s.tick(1.0).dispatched] == [last]


def test_contract_checks_and_quota() -> None:
    s = Scheduler([TenantContract("t", allowed_models=frozenset({"m"}), max_seconds=20, max_pixels=1280 * 720,
                                  daily_seconds_quota=30)], [pool("p/m")], {"m": ["p/m"], "x": ["p/m"]})
    assert s.submit(job("t", model="x"), 0.0).code == "model_not_allowed"  # type: ignore[union-attr]
    assert s.submit(job("t", seconds=25), 0.0).code == "too_long"  # type: ignore[union-attr]
    assert s.submit(job("t", size=(1920, 1080)), 0.0).code == "resolution_not_allowed"  # type: ignore[union-attr]
    assert s.submit(job("t", seconds=20), 0.0) is None
    assert s.submit(job("t", seconds=20), 0.0).code == "quota_exceeded"  # type: ignore[union-attr]
    assert s.submit(job("t", seconds=20), 86_400.0) is None  # a new day
    assert s.submit(job("nobody"), 0.0).code == "no_contract"  # type: ignore[union-attr]


def test_contract_change_applies_to_waiting_work() -> None:
    s = Scheduler([TenantContract("t", max_concurrent=1)], [pool("p/m", slots=5)], {"m": ["p/m"]})
    for _ in range(4):
        s.submit(job("t"), 0.0)
    assert len(s.tick(0.0).dispatched) == 1
    s.upsert_contract(TenantContract("t", max_concurrent=3))
    assert len(s.tick(0.0).dispatched) == 2


def test_paused_pool_takes_no_new_work() -> None:
    s = Scheduler([TenantContract("t")], [pool("a/m", cost=1), pool("b/m", cost=2)], {"m": ["a/m", "b/m"]})
    s.set_pool_mode("a/m", paused=True, draining=False)
    s.submit(job("t"), 0.0)
    assert [d.pool_id for d in s.tick(0.0).dispatched] == ["b/m"]


def test_resolution_classes() -> None:
    assert [resolution_class(*s) for s in [(854, 480), (1280, 720), (720, 1280), (1920, 1080), (3840, 2160)]] == [
        "480p", "720p", "720p", "1080p", "4k"]
