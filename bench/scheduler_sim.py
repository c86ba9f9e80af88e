"""Scheduler core in simulated time: 1,000 tenants, 20 pools, 1,000,000 jobs (bounded by wall time).

Run: `./run bench bench/scheduler_sim.py [--jobs N] [--budget SECONDS]`. Prints decisions per second,
Jain's fairness index among equal-weight backlogged tenants, cap violations (counted by the
simulator's own bookkeeping, not the scheduler's) and pool utilisation while work waits. If the
wall-time budget runs out first it prints how many jobs it did.

Utilisation while work waits is counted per model, from the simulator's own bookkeeping: while a job
for model M waits whose tenant is under its concurrency cap (so the scheduler may start it), the
pools serving M should be full; the figure is their used share of what they can hold in whole jobs
over those stretches. Idle capacity of a model with no startable work (its waiting jobs' tenants at
their caps, or jobs backing off after a failure) is not the scheduler's to fill, so it is not
counted; the older figure, all capacity while any job waits, is printed beside it for comparison.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import time
from collections import defaultdict

from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.fair_queue import Scheduler, SchedulingPolicy
from reelforge_orchestrator.scheduling.pools import PoolSpec
from reelforge_orchestrator.scheduling.router import Job

MODELS = ["sora-2", "veo-3", "runway-gen4", "wan-2.2", "kling-2"]
SIZES = [(1280, 720), (720, 1280), (1920, 1080), (854, 480)]


def build(rng: random.Random) -> tuple[list[TenantContract], list[PoolSpec], dict[str, list[str]]]:
    contracts = []
    for i in range(1000):
        if i < 50:
            contracts.append(TenantContract(f"ent{i}", tier="enterprise", weight=rng.choice([2.0, 4.0]),
                                            max_concurrent=6, requests_per_minute=120))
        elif i < 850:
            # the first 600 standard tenants share weight 1: the Jain population
            weight = 1.0 if i < 650 else 2.0
            contracts.append(TenantContract(f"std{i}", tier="standard", weight=weight, max_concurrent=4,
                                            requests_per_minute=60))
        else:
            contracts.append(TenantContract(f"free{i}", tier="free", weight=1.0, max_concurrent=1,
                                            requests_per_minute=10))
    pools: list[PoolSpec] = []
    routes: dict[str, list[str]] = defaultdict(list)
    providers = ["openai", "wavespeed", "fal", "replicate"]
    for m, model in enumerate(MODELS):
        for p, provider in enumerate(providers):
            pool_id = f"{provider}/{model}"
            base = 50 + 25 * p + 10 * m
            costs = {"480p": base, "720p": base * 2, "1080p": base * 4}
            if p == 3 and m < 2:  # two self-hosted GPU pools of 64 H100s
                spec = PoolSpec(pool_id=f"gpu/{model}", provider="selfhosted", model=model, gpus=64,
                                cost_micros_per_second=costs, requests_per_minute=6000)
            else:
                spec = PoolSpec(pool_id=pool_id, provider=provider, model=model, slots=40 + 10 * p,
                                requests_per_minute=6000, cost_micros_per_second=costs,
                                latency_seconds_per_output_second=1.0 + 0.5 * p)
            pools.append(spec)
            routes[model].append(spec.pool_id)
    return contracts, pools, dict(routes)


def jain(values: list[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=55.0, help="wall-clock seconds before stopping")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    contracts, pools, routes = build(rng)
    caps = {c.tenant_id: c.max_concurrent for c in contracts}
    capacity = {p.pool_id: p.capacity for p in pools}
    total_capacity = sum(capacity.values())
    sched = Scheduler(contracts, pools, routes, SchedulingPolicy(aging_seconds_per_tier=600.0))
    tenant_ids = [c.tenant_id for c in contracts]
    jain_population = [c.tenant_id for c in contracts if c.tier == "standard" and c.weight == 1.0]

    # Arrivals: an initial burst that backlogs every tenant, then a steady stream a little above
    # what the pools can serve, so work always waits.
    # What the pools can serve: jobs per simulated second of each pool running flat out on the mean
    # job (10 s, the mean frame size).
    mean_seconds = 10.0
    mean_pixels = sum(w * h for w, h in SIZES) / len(SIZES)
    service_rate = 0.0
    for spec in pools:
        if spec.is_gpu_pool:
            gpu_seconds = spec.gpu_seconds(mean_seconds, int(mean_pixels), 1)
            service_rate += (spec.capacity // spec.units_per_job) / (gpu_seconds / spec.units_per_job)
        else:
            service_rate += spec.capacity / (mean_seconds * spec.latency_seconds_per_output_second)
    arrival_rate = service_rate * 1.1

    made = 0

    def new_job(now: float) -> Job:
        nonlocal made
        made += 1
        tenant = tenant_ids[int(rng.random() * 1000)]
        width, height = SIZES[int(rng.random() * 4)]
        seconds = float(4 + int(rng.random() * 13))  # 4..16 s
        deadline = now + 900.0 if rng.random() < 0.01 else None
        return Job(f"j{made}", tenant, MODELS[int(rng.random() * 5)], seconds, width, height, now, deadline)

    completions: list[tuple[float, int, str, bool]] = []
    running_tenant: dict[str, int] = defaultdict(int)
    running_pool: dict[str, int] = defaultdict(int)
    where: dict[str, tuple[str, str, int]] = {}
    violations = 0
    decisions = 0
    dispatched = 0
    completed = 0
    ended = 0
    seq = 0
    busy_while_waiting = 0.0
    time_waiting = 0.0
    # per model: jobs waiting whose tenant is under its cap (startable), and the pools' units
    pools_of: dict[str, list[str]] = {model: list(ids) for model, ids in routes.items()}
    usable = {p.pool_id: p.capacity - p.capacity % p.units_per_job for p in pools}
    usable_of = {model: sum(usable[pid] for pid in ids) for model, ids in pools_of.items()}
    waiting_of: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # tenant -> model -> n
    startable: dict[str, int] = defaultdict(int)
    backing_off: set[str] = set()
    busy_startable: dict[str, float] = defaultdict(float)
    time_startable: dict[str, float] = defaultdict(float)
    service: dict[str, float] = defaultdict(float)
    backlogged_throughout = set(jain_population)
    now = 0.0
    next_arrival = 0.0
    sched_seconds = 0.0
    clock = time.perf_counter  # cheap; the process CPU time is read only at both ends
    debug = bool(os.environ.get("SIM_DEBUG"))
    units_in_use = 0
    window_start = 600.0  # measure fairness after warm-up

    reference = time.process_time()
    x = 0
    for i in range(5_000_000):
        x += i
    reference = time.process_time() - reference
    started = time.perf_counter()
    cpu_started = time.process_time()
    def queued(job: Job) -> None:
        waiting_of[job.tenant_id][job.model] += 1
        if running_tenant[job.tenant_id] < caps[job.tenant_id]:
            startable[job.model] += 1

    def left_queue(job: Job) -> None:
        waiting_of[job.tenant_id][job.model] -= 1
        if running_tenant[job.tenant_id] < caps[job.tenant_id]:
            startable[job.model] -= 1

    def tenant_slots_changed(tenant_id: str, before: int) -> None:
        """The tenant crossed its cap one way or the other: its waiting jobs stop or start counting."""
        cap, after = caps[tenant_id], running_tenant[tenant_id]
        if (before < cap) != (after < cap):
            sign = 1 if after < cap else -1
            for model, n in waiting_of[tenant_id].items():
                startable[model] += sign * n

    for _ in range(20 * 1000):
        job = new_job(0.0)
        if sched.submit(job, 0.0) is None:
            queued(job)
    out_of_time = False
    steps = 0
    while True:
        steps += 1
        if steps % 2048 == 0 and time.perf_counter() - started > args.budget:
            out_of_time = True
            break
        t0 = clock()
        result = sched.tick(now)
        sched_seconds += clock() - t0
        decisions += len(result.dispatched) + len(result.ended)
        ended += len(result.ended)
        for gone in result.ended:
            if gone.job.job_id in backing_off:
                backing_off.discard(gone.job.job_id)
            else:
                left_queue(gone.job)
        for d in result.dispatched:
            job = d.job
            spec = sched.pools[d.pool_id].spec
            units = spec.units_per_job
            if job.job_id in backing_off:
                backing_off.discard(job.job_id)
            else:
                left_queue(job)
            running_tenant[job.tenant_id] += 1
            tenant_slots_changed(job.tenant_id, running_tenant[job.tenant_id] - 1)
            running_pool[d.pool_id] += units
            units_in_use += units
            if running_tenant[job.tenant_id] > caps[job.tenant_id] or running_pool[d.pool_id] > capacity[d.pool_id]:
                violations += 1
            where[job.job_id] = (job.tenant_id, d.pool_id, units, job.seconds)
            duration = sched.pools[d.pool_id].estimated_seconds(job.seconds, job.width, job.height)
            duration *= 0.8 + 0.4 * rng.random()
            ok = rng.random() > 0.01
            seq += 1
            heapq.heappush(completions, (now + duration, seq, job.job_id, ok))
            dispatched += 1
            if window_start <= now and made < args.jobs:
                service[job.tenant_id] += job.seconds
        # advance to the next event
        next_completion = completions[0][0] if completions else float("inf")
        if made >= args.jobs and not completions and not sched.waiting:
            break
        upcoming = min(next_completion, next_arrival if made < args.jobs else float("inf"))
        if upcoming == float("inf"):
            upcoming = now + 1.0  # only timers (backoff) left
        dt = upcoming - now
        steady = window_start <= now and made < args.jobs  # warmed up, arrivals still coming
        if steady and sched.waiting and dt > 0:
            time_waiting += dt
            busy_while_waiting += dt * units_in_use / total_capacity
            if debug and steps % 5000 == 0:
                print(now, {pid: f"{ps.in_use}/{ps.capacity}" for pid, ps in sched.pools.items()})
                print({r: {m: len(h) for m, h in bm.items()} for r, bm in sched._heaps.items()})
            for model, n in startable.items():
                if n > 0:
                    time_startable[model] += dt
                    busy_startable[model] += dt * sum(running_pool[pid] for pid in pools_of[model]) / usable_of[model]
            if steps % 64 == 0:
                for tenant_id in list(backlogged_throughout):
                    if sched.tenants[tenant_id].waiting == 0:
                        backlogged_throughout.discard(tenant_id)
        now = upcoming
        while made < args.jobs and next_arrival <= now:
            job = new_job(next_arrival)
            t0 = clock()
            rejected = sched.submit(job, next_arrival)
            sched_seconds += clock() - t0
            if rejected is None:
                queued(job)
            next_arrival += rng.expovariate(arrival_rate)
        while completions and completions[0][0] <= now:
            _, _, job_id, ok = heapq.heappop(completions)
            tenant_id, pool_id, units, seconds = where.pop(job_id)
            running_tenant[tenant_id] -= 1
            tenant_slots_changed(tenant_id, running_tenant[tenant_id] + 1)
            running_pool[pool_id] -= units
            units_in_use -= units
            t0 = clock()
            outcome = sched.render_done(job_id, now, ok=ok, retriable=True, code="" if ok else "provider_error",
                                        output_seconds=seconds, finish_job=True)
            sched_seconds += clock() - t0
            if outcome is not None and outcome.kind == "completed":
                completed += 1
            elif outcome is not None and outcome.kind == "failed":
                ended += 1
            elif outcome is not None and outcome.kind == "retry":
                backing_off.add(job_id)  # waiting again, but not startable until its backoff ends
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started

    fair_values = [service[t] for t in backlogged_throughout]
    stopped = "  (stopped at the wall-time budget)" if out_of_time else ""
    print(f"jobs generated           {made:,} of {args.jobs:,}{stopped}")
    print(f"simulated time           {now:,.0f} s")
    print(f"tenants / pools          {len(contracts)} / {len(pools)} ({total_capacity} capacity units); arrivals "
          f"{arrival_rate:.1f}/s against {service_rate:.1f}/s the pools can serve")
    print(f"dispatched / completed   {dispatched:,} / {completed:,}; expired or failed {ended:,}; "
          f"still waiting {len(sched.waiting):,}")
    print(f"decisions                {decisions:,}")
    print(f"wall time                {wall:.1f} s (scheduler calls {sched_seconds:.1f} s)")
    print(f"decisions/s (wall)       {decisions / wall:,.0f}")
    print(f"decisions/s (scheduler)  {decisions / sched_seconds:,.0f}  (wall time inside scheduler calls)")
    print(f"decisions/s (CPU)        {decisions / cpu:,.0f}  (process CPU time {cpu:.1f} s, the simulator "
          f"included: the figure least disturbed by other load; load average now {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    print(f"CPU reference            5M-iteration Python loop took {reference:.2f} CPU s on this machine now")
    print(f"Jain index               {jain(fair_values):.4f} over {len(fair_values)} equal-weight standard tenants "
          f"backlogged from t={window_start:.0f} s until arrivals stop")
    print(f"cap violations           {violations}")
    per_model = {m: busy_startable[m] / time_startable[m] for m in time_startable if time_startable[m]}
    overall = sum(busy_startable.values()) / sum(time_startable.values()) if time_startable else 0.0
    shares = ", ".join(f"{m} {100 * u:.1f} % over {100 * time_startable[m] / max(time_waiting, 1e-9):.0f} % of the time"
                       for m, u in sorted(per_model.items()))  # fmt: skip
    print(f"utilisation while work waits {100 * overall:.2f} %  (per model, while a job its tenant may start "
          f"waits for it: {shares})")
    print(f"  all capacity while any job waits {100 * busy_while_waiting / time_waiting if time_waiting else 0:.2f} %"
          f"  (the older figure: counts capacity of models whose waiting jobs' tenants are at their caps)")


if __name__ == "__main__":
    main()
