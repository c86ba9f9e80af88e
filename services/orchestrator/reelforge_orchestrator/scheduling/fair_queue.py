"""The scheduler: strict priority across tiers (with aging), weighted fair sharing inside a tier, per-
tenant caps, routing with spill and failover, deadlines and cancellation.

Fair sharing is start-time fair queueing: each backlogged tenant carries a virtual start tag S =
max(V, F) where V is the tier's virtual time and F the tenant's finish tag; the smallest S is served
next and F becomes S + cost / weight (cost = output seconds), so backlogged tenants get service in
proportion to their weights. A tenant's jobs queue per model (FIFO within a model) so a model whose
pools are full does not hold back its jobs for other models; the flows share the tenant's one finish
tag, and a flow whose queued tag went stale is re-tagged when it surfaces. A tenant at its
concurrency or rate cap leaves the queue until it is under the cap again, so caps can never be
exceeded. A job that has waited `aging_seconds_per_tier` competes as if its tenant were one tier
higher, so nothing starves.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from reelforge_orchestrator.scheduling.circuit import CircuitPolicy
from reelforge_orchestrator.scheduling.contracts import QuotaUsage, TenantContract, day_and_month
from reelforge_orchestrator.scheduling.pools import PoolSpec, PoolState, resolution_class
from reelforge_orchestrator.scheduling.router import Job, Router

NON_RETRIABLE_CODES = frozenset({"invalid_input", "content_policy"})


@dataclass(frozen=True)
class SchedulingPolicy:
    aging_seconds_per_tier: float = 120.0
    max_attempts: int = 3
    backoff_first_seconds: float = 2.0
    backoff_max_seconds: float = 60.0
    non_retriable_codes: frozenset[str] = NON_RETRIABLE_CODES
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)

    def backoff(self, attempt: int) -> float:
        return float(min(self.backoff_max_seconds, self.backoff_first_seconds * 2 ** max(0, attempt - 1)))


class Dispatch(NamedTuple):
    job: Job
    pool_id: str
    provider: str
    attempt: int


@dataclass(frozen=True)
class Ended:
    """A job that left the scheduler without running to completion."""

    job: Job
    state: str  # "expired" | "failed" | "cancelled"
    code: str
    message: str


@dataclass
class Decisions:
    dispatched: list[Dispatch] = field(default_factory=list)
    ended: list[Ended] = field(default_factory=list)


class RenderOutcome(NamedTuple):
    kind: str  # "completed" | "retry" | "failed"
    job: Job
    pool_id: str
    code: str = ""
    message: str = ""
    retry_in: float = 0.0


@dataclass(frozen=True)
class Rejection:
    code: str
    message: str


class _Tenant:
    __slots__ = ("cap", "contract", "dropped", "finish_tag", "generation", "heaped", "in_flight", "queues", "quota",
                 "rank", "rate_parked", "starts", "waiting", "weight")

    def __init__(self, contract: TenantContract) -> None:
        self.contract = contract
        self.rank = contract.rank
        self.cap = contract.max_concurrent
        self.weight = contract.weight
        self.queues: dict[str, deque[Job]] = {}  # model -> FIFO
        self.heaped: set[str] = set()  # models with an entry in the tier's heap for that model
        self.dropped: set[str] = set()  # models with work whose entry left the heap at a cap (rejoin under it)
        self.waiting = 0           # jobs waiting (queued or backing off), not removed
        self.in_flight = 0         # dispatched and not finished (render + postprocess)
        self.starts: deque[float] = deque()  # dispatch times in the last minute
        self.finish_tag = 0.0
        self.rate_parked = False
        self.quota = QuotaUsage()
        self.generation = 0

    def head(self, model: str) -> Job | None:
        queue = self.queues.get(model)
        if not queue:
            return None
        while queue and queue[0].removed:
            queue.popleft()
        return queue[0] if queue else None

    def rate_allows(self, now: float) -> bool:
        starts = self.starts
        limit = self.contract.requests_per_minute
        if len(starts) < limit:
            return True
        while starts and starts[0] <= now - 60.0:
            starts.popleft()
        return len(starts) < limit

    def set_contract(self, contract: TenantContract) -> None:
        self.contract = contract
        self.rank = contract.rank
        self.cap = contract.max_concurrent
        self.weight = contract.weight


class _InFlight:
    __slots__ = ("job", "pool_id", "rendering", "started_at", "units")

    def __init__(self, job: Job, pool_id: str, units: int, started_at: float, rendering: bool) -> None:
        self.job = job
        self.pool_id = pool_id
        self.units = units
        self.started_at = started_at
        self.rendering = rendering


class Scheduler:
    def __init__(
        self,
        contracts: Iterable[TenantContract],
        pools: Iterable[PoolSpec],
        routes: Mapping[str, Iterable[str]],
        policy: SchedulingPolicy | None = None,
        default_contract: TenantContract | None = None,
    ) -> None:
        self.policy = policy or SchedulingPolicy()
        self.default_contract = default_contract
        self.tenants: dict[str, _Tenant] = {c.tenant_id: _Tenant(c) for c in contracts}
        self.pools: dict[str, PoolState] = {p.pool_id: PoolState(p, self.policy.circuit) for p in pools}
        self.router = Router(self.pools, routes)
        # tier rank -> model of the tenant's head job -> heap of (start tag, seq, tenant, generation)
        self._heaps: dict[int, dict[str, list[tuple[float, int, str, int]]]] = {}
        self._vtime: dict[int, float] = {}
        self._seq = itertools.count()
        self.waiting: dict[str, Job] = {}
        self.in_flight: dict[str, _InFlight] = {}
        self._rate_parked: list[tuple[float, str]] = []
        self._retries: list[tuple[float, int, Job]] = []
        self._deadlines: list[tuple[float, int, Job]] = []
        self.decisions = 0
        # A dispatch pass looks only at models that may have gained a pick since the last pass: a pool
        # of theirs freed capacity or a tenant flow joined their heap. Time alone can also reopen a
        # pool (rate window, breaker cool-down), so every model is looked at again each
        # FULL_RECHECK_SECONDS, and at once after a configuration change.
        self._maybe_open: set[str] = set()
        self._known_full: set[str] = set()  # models found full, with no capacity freed since
        self._recheck_all_at = float("-inf")

    # -- configuration, applied without restart -------------------------------------------------

    def upsert_contract(self, contract: TenantContract) -> None:
        self._recheck_all_at = float("-inf")
        tenant = self.tenants.get(contract.tenant_id)
        if tenant is None:
            self.tenants[contract.tenant_id] = _Tenant(contract)
            return
        tenant.set_contract(contract)
        tenant.generation += 1  # the tier may have changed: requeue every flow under the new contract
        tenant.heaped.clear()
        tenant.dropped.clear()
        self._activate(tenant, None, list(tenant.queues))

    def upsert_pool(self, spec: PoolSpec) -> None:
        self._recheck_all_at = float("-inf")
        state = self.pools.get(spec.pool_id)
        if state is None:
            self.pools[spec.pool_id] = PoolState(spec, self.policy.circuit)
        else:
            state.spec = spec
        self.router.invalidate()

    def set_routes(self, routes: Mapping[str, Iterable[str]]) -> None:
        self._recheck_all_at = float("-inf")
        self.router.routes = {model: list(ids) for model, ids in routes.items()}

    def set_pool_mode(self, pool_id: str, paused: bool, draining: bool) -> None:
        self._recheck_all_at = float("-inf")
        pool = self.pools[pool_id]
        pool.paused, pool.draining = paused, draining

    def contract_for(self, tenant_id: str) -> TenantContract | None:
        tenant = self.tenants.get(tenant_id)
        if tenant is not None:
            return tenant.contract
        return self.contract_for_default(tenant_id)

    def contract_for_default(self, tenant_id: str) -> TenantContract | None:
        """The default contract, made out to `tenant_id` (None if there is no default)."""
        if self.default_contract is None:
            return None
        return dataclasses.replace(self.default_contract, tenant_id=tenant_id)

    def _tenant(self, tenant_id: str) -> _Tenant | None:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            contract = self.contract_for(tenant_id)
            if contract is None:
                return None
            tenant = self.tenants[tenant_id] = _Tenant(contract)
        return tenant

    # -- jobs in ---------------------------------------------------------------------------------

    def check(self, tenant_id: str, model: str, seconds: float, width: int, height: int) -> Rejection | None:
        """Contract and routing checks, without taking quota or queueing."""
        contract = self.contract_for(tenant_id)
        if contract is None:
            return Rejection("no_contract", "the tenant has no contract")
        problem = contract.admission_problem(model, seconds, width, height)
        if problem:
            return Rejection(*problem)
        if not self.router.serves(model, resolution_class(width, height)):
            return Rejection("no_route", f"no capacity pool serves model {model!r} at {width}x{height}")
        return None

    def submit(self, job: Job, now: float, take_quota: bool = True) -> Rejection | None:
        """Queues the job (or says why not). Its deadline defaults from the contract."""
        if job.job_id in self.waiting or job.job_id in self.in_flight:
            return None
        rejection = self.check(job.tenant_id, job.model, job.seconds, job.width, job.height)
        if rejection:
            return rejection
        tenant = self._tenant(job.tenant_id)
        assert tenant is not None
        if take_quota:
            problem = tenant.quota.try_take(tenant.contract, job.seconds, now)
            if problem:
                return Rejection(*problem)
        if job.deadline is None and tenant.contract.default_deadline_seconds is not None:
            job.deadline = job.enqueued_at + tenant.contract.default_deadline_seconds
        self._enqueue(tenant, job, now)
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, next(self._seq), job))
        return None

    def _enqueue(self, tenant: _Tenant, job: Job, now: float, front: bool = False) -> None:
        job.removed = False
        self.waiting[job.job_id] = job
        tenant.waiting += 1
        queue = tenant.queues.get(job.model)
        if queue is None:
            queue = tenant.queues[job.model] = deque()
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)
        if job.model not in tenant.heaped:
            self._activate(tenant, now, (job.model,))

    def _under_caps(self, tenant: _Tenant, now: float | None) -> bool:
        """Whether the tenant may start a job now; parks it until its rate window slides if not."""
        if tenant.rate_parked or tenant.in_flight >= tenant.cap:
            return False
        if now is not None and not tenant.rate_allows(now):
            tenant.rate_parked = True
            heapq.heappush(self._rate_parked, (tenant.starts[0] + 60.0, tenant.contract.tenant_id))
            return False
        return True

    def _activate(self, tenant: _Tenant, now: float | None, models: Iterable[str]) -> None:
        """Puts the tenant's flows for `models` that have work in their heaps if it is under its caps."""
        if not self._under_caps(tenant, now):
            tenant.dropped.update(m for m in models if tenant.queues.get(m))
            return
        rank = tenant.rank
        vtime = self._vtime.setdefault(rank, 0.0)
        tag = tenant.finish_tag if tenant.finish_tag > vtime else vtime
        heaped = tenant.heaped
        for model in models:
            if model not in heaped and tenant.head(model) is not None:
                self._push(tenant, rank, model, tag)

    def _rejoin(self, tenant: _Tenant, now: float) -> None:
        """The tenant may be under its caps again: its flows that left a heap at a cap rejoin."""
        if tenant.dropped and self._under_caps(tenant, now):
            dropped = tenant.dropped
            tenant.dropped = set()
            self._activate(tenant, now, dropped)

    def _push(self, tenant: _Tenant, rank: int, model: str, tag: float) -> None:
        by_model = self._heaps.get(rank)
        if by_model is None:
            by_model = self._heaps[rank] = {}
        heap = by_model.get(model)
        if heap is None:
            heap = by_model[model] = []
        tenant.heaped.add(model)
        if model not in self._known_full:
            self._maybe_open.add(model)
        heapq.heappush(heap, (tag, next(self._seq), tenant.contract.tenant_id, tenant.generation))

    # -- the decision loop -----------------------------------------------------------------------

    def tick(self, now: float) -> Decisions:
        """Expires what can no longer make its deadline and dispatches all that fits, best first."""
        decisions = Decisions()
        if (self._rate_parked and self._rate_parked[0][0] <= now) or (self._retries and self._retries[0][0] <= now):
            self._wake_timers(now)
        if self._deadlines and self._deadlines[0][0] < now:
            self._expire(now, decisions)
        if now >= self._recheck_all_at:
            self._recheck_all_at = now + self.FULL_RECHECK_SECONDS
            self._known_full.clear()
            self._maybe_open.update(self.router.routes)
        if self._maybe_open:
            self._dispatch(now, decisions)
        self.decisions += len(decisions.dispatched) + len(decisions.ended)
        return decisions

    FULL_RECHECK_SECONDS = 1.0

    def _wake_timers(self, now: float) -> None:
        while self._rate_parked and self._rate_parked[0][0] <= now:
            _, tenant_id = heapq.heappop(self._rate_parked)
            tenant = self.tenants[tenant_id]
            tenant.rate_parked = False
            self._rejoin(tenant, now)
        while self._retries and self._retries[0][0] <= now:
            _, _, job = heapq.heappop(self._retries)
            if job.removed or job.job_id not in self.waiting:
                continue
            tenant = self.tenants[job.tenant_id]
            tenant.waiting -= 1  # _enqueue counts it again
            self._enqueue(tenant, job, now, front=True)

    def _expire(self, now: float, decisions: Decisions) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < now:
            _, _, job = heapq.heappop(deadlines)
            if self.waiting.get(job.job_id) is job:
                self._remove_waiting(job, now)
                decisions.ended.append(Ended(job, "expired", "deadline_exceeded",
                                             "the job's deadline passed before capacity was free"))

    def _model_open(self, model: str, now: float) -> bool:
        """Whether some pool of the model can start a job now."""
        for pool in self.router.pools_for(model):
            if pool.in_use + pool.units <= pool.capacity and pool.can_start(now):
                return True
        return False

    def _top(self, heap: list[tuple[float, int, str, int]], model: str) -> bool:
        """Leaves the live head of a (tier, model) heap on top (False if none): drops entries of flows
        that emptied or whose tenant is at a cap, re-tags entries whose tenant was served elsewhere."""
        tenants = self.tenants
        while heap:
            tag, _, tenant_id, generation = heap[0]
            tenant = tenants[tenant_id]
            if generation != tenant.generation:
                heapq.heappop(heap)
                continue
            queue = tenant.queues[model]
            while queue and queue[0].removed:
                queue.popleft()
            if not queue:
                heapq.heappop(heap)  # it rejoins when work for the model arrives
                tenant.heaped.discard(model)
                continue
            if tenant.rate_parked or tenant.in_flight >= tenant.cap:
                heapq.heappop(heap)  # it rejoins when the tenant is under its caps again
                tenant.heaped.discard(model)
                tenant.dropped.add(model)
                continue
            if tag < tenant.finish_tag:  # another flow of this tenant was served since this entry was queued
                heapq.heapreplace(heap, (tenant.finish_tag, next(self._seq), tenant_id, generation))
                continue
            return True
        return False

    def _pick(self, now: float, open_models: set[str]) -> tuple[int, str] | None:
        """(tier rank, model) of the next job: inside each tier the smallest start tag among models
        with room; across tiers the best rank after aging. The job heads that heap's top tenant's flow."""
        best: tuple[float, int, str] | None = None
        aging = self.policy.aging_seconds_per_tier
        top = self._top
        for rank, by_model in self._heaps.items():
            tier_tag = 0.0
            tier_model: str | None = None
            for model in open_models:
                heap = by_model.get(model)
                if heap and top(heap, model) and (tier_model is None or heap[0][0] < tier_tag):
                    tier_tag = heap[0][0]
                    tier_model = model
            if tier_model is None:
                continue
            head = self.tenants[by_model[tier_model][0][2]].queues[tier_model][0]
            effective = rank - (now - head.enqueued_at) / aging
            if best is None or effective < best[0] or (effective == best[0] and rank < best[1]):
                best = (effective, rank, tier_model)
        return None if best is None else (best[1], best[2])

    def _dispatch(self, now: float, decisions: Decisions) -> None:
        looked_at = self._maybe_open
        self._maybe_open = set()
        open_models = {model for model in looked_at if self._model_open(model, now)}
        self._known_full |= looked_at - open_models
        aside: list[tuple[int, str, _Tenant, float]] = []
        while open_models:
            picked = self._pick(now, open_models)
            if picked is None:
                break
            rank, model = picked
            heap = self._heaps[rank][model]
            tenant = self.tenants[heap[0][2]]
            job = tenant.queues[model][0]
            pool = self.router.choose(job, now)
            if pool is None:
                tag = heapq.heappop(heap)[0]
                tenant.heaped.discard(model)
                reason = self.router.hopeless(job, now)
                if reason is None:  # only pools too slow for its deadline have room: wait for a faster one
                    aside.append((rank, model, tenant, tag))
                    if not self._model_open(model, now):  # a pool shared with another model filled up
                        open_models.discard(model)
                        self._known_full.add(model)
                    continue
                self._remove_waiting(job, now)
                message = ("no pool can finish the job before its deadline" if reason == "deadline_exceeded"
                           else "no capacity pool serves this job")
                decisions.ended.append(Ended(job, "expired" if reason == "deadline_exceeded" else "failed",
                                             reason, message))
                self._activate(tenant, now, (model,))
                continue
            decisions.dispatched.append(self._start(tenant, rank, heap[0][0], job, pool, now))
            queue = tenant.queues[model]
            if queue and self._under_caps(tenant, now):  # the flow stays, behind its new finish tag
                heapq.heapreplace(heap, (tenant.finish_tag, next(self._seq), tenant.contract.tenant_id,
                                         tenant.generation))
            else:
                heapq.heappop(heap)
                tenant.heaped.discard(model)
                if queue:
                    tenant.dropped.add(model)
            if not pool.can_start(now) and not self._model_open(model, now):
                open_models.discard(model)
                self._known_full.add(model)
        for rank, model, tenant, tag in aside:
            self._push(tenant, rank, model, tag)
        # Every model looked at ran until it was full or had no work left; what joined its heaps
        # meanwhile waits for capacity to free.
        self._maybe_open -= looked_at

    def _start(self, tenant: _Tenant, rank: int, tag: float, job: Job, pool: PoolState, now: float) -> Dispatch:
        tenant.queues[job.model].popleft()
        tenant.waiting -= 1
        del self.waiting[job.job_id]
        tenant.in_flight += 1
        tenant.starts.append(now)
        vtime = self._vtime[rank]
        start = tag if tag > vtime else vtime  # an entry that lagged while its model was full gets no credit past V
        self._vtime[rank] = start
        tenant.finish_tag = start + max(job.seconds, 0.001) / tenant.weight
        units = pool.start(now)
        job.attempt += 1
        self.in_flight[job.job_id] = _InFlight(job, pool.pool_id, units, now, True)
        return Dispatch(job, pool.pool_id, pool.provider, job.attempt)

    def _remove_waiting(self, job: Job, now: float) -> None:
        job.removed = True
        del self.waiting[job.job_id]
        tenant = self.tenants[job.tenant_id]
        tenant.waiting -= 1
        tenant.quota.give_back(job.seconds)

    # -- results ---------------------------------------------------------------------------------

    def render_done(self, job_id: str, now: float, ok: bool, retriable: bool = False, code: str = "",
                    message: str = "", output_seconds: float = 0.0, finish_job: bool = False) -> RenderOutcome | None:
        """A render ended. Frees the pool slot; on success the tenant slot stays taken until `job_done`
        (or at once with `finish_job`). None if the job was not rendering here (a duplicate)."""
        flight = self.in_flight.get(job_id)
        if flight is None or not flight.rendering:
            return None
        job = flight.job
        pool = self.pools.get(flight.pool_id)
        blames_pool = not ok and code not in self.policy.non_retriable_codes
        if pool is not None:
            verdict = True if ok else (False if blames_pool else None)
            pool.finish(flight.units, verdict, now, now - flight.started_at, output_seconds)
            self._pool_freed(flight.pool_id)
        flight.rendering = False
        if ok:
            if finish_job:
                self.job_done(job_id, now)
            return RenderOutcome("completed", job, flight.pool_id)
        self._release_tenant(job_id, now)
        if not retriable or code in self.policy.non_retriable_codes:
            self.tenants[job.tenant_id].quota.give_back(job.seconds)
            return RenderOutcome("failed", job, flight.pool_id, code or "render_failed", message)
        if job.attempt >= self.policy.max_attempts:
            self.tenants[job.tenant_id].quota.give_back(job.seconds)
            return RenderOutcome("failed", job, flight.pool_id, code or "render_failed",
                                 f"gave up after {job.attempt} attempts: {message}")
        delay = self.policy.backoff(job.attempt)
        job.avoid = job.avoid | {flight.pool_id}
        job.not_before = now + delay
        self.waiting[job.job_id] = job
        self.tenants[job.tenant_id].waiting += 1
        heapq.heappush(self._retries, (job.not_before, next(self._seq), job))
        return RenderOutcome("retry", job, flight.pool_id, code, message, delay)

    def _pool_freed(self, pool_id: str) -> None:
        models = self.router.models_of(pool_id)
        self._maybe_open |= models
        self._known_full -= models

    def job_done(self, job_id: str, now: float) -> None:
        """The job left the tenant's concurrency (completed, or failed/cancelled after rendering)."""
        flight = self.in_flight.get(job_id)
        if flight is None:
            return
        if flight.rendering:
            pool = self.pools.get(flight.pool_id)
            if pool is not None:
                pool.finish(flight.units, None, now)
                self._pool_freed(flight.pool_id)
        self._release_tenant(job_id, now)

    def _release_tenant(self, job_id: str, now: float) -> None:
        flight = self.in_flight.pop(job_id)
        tenant = self.tenants[flight.job.tenant_id]
        tenant.in_flight -= 1
        self._rejoin(tenant, now)

    def cancel(self, job_id: str, now: float) -> str | None:
        """"waiting" (dropped from the queue), "rendering" (slot freed; tell the provider),
        "postprocessing", or None if the scheduler does not hold it."""
        job = self.waiting.get(job_id)
        if job is not None:
            self._remove_waiting(job, now)
            return "waiting"
        flight = self.in_flight.get(job_id)
        if flight is None:
            return None
        where = "rendering" if flight.rendering else "postprocessing"
        self.tenants[flight.job.tenant_id].quota.give_back(flight.job.seconds)
        self.job_done(job_id, now)
        return where

    # -- rebuilding after a restart --------------------------------------------------------------

    def restore_in_flight(self, job: Job, pool_id: str | None, started_at: float, now: float) -> None:
        """A job already dispatched (pool_id set: still rendering; None: past rendering)."""
        tenant = self._tenant(job.tenant_id)
        if tenant is None or job.job_id in self.in_flight:
            return
        tenant.in_flight += 1
        if started_at > now - 60.0:
            tenant.starts.append(started_at)
        units = 0
        pool = self.pools.get(pool_id) if pool_id else None
        if pool is not None:
            units = pool.spec.units_per_job
            pool.in_use += units
        self.in_flight[job.job_id] = _InFlight(job, pool_id or "", units, started_at, rendering=pool is not None)

    def restore_waiting(self, job: Job, now: float) -> None:
        """A job that was waiting (admitted, or backing off before a retry) before a restart."""
        tenant = self._tenant(job.tenant_id)
        if tenant is None or job.job_id in self.waiting or job.job_id in self.in_flight:
            return
        if job.not_before > now:
            self.waiting[job.job_id] = job
            tenant.waiting += 1
            heapq.heappush(self._retries, (job.not_before, next(self._seq), job))
        else:
            self._enqueue(tenant, job, now)
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, next(self._seq), job))

    def restore_quota_usage(self, tenant_id: str, seconds: float, admitted_at: float, now: float) -> None:
        """Counts seconds admitted earlier (today or this month) against the tenant's quota."""
        tenant = self._tenant(tenant_id)
        if tenant is None:
            return
        quota = tenant.quota
        quota.roll(now)
        day, month = day_and_month(admitted_at)
        if day == quota.day:
            quota.day_seconds += seconds
        if month == quota.month:
            quota.month_seconds += seconds

    # -- what operators see ----------------------------------------------------------------------

    def queue_depths(self, now: float) -> dict[str, tuple[str, int, float]]:
        """tenant -> (tier, waiting jobs, oldest wait in seconds)."""
        oldest: dict[str, float] = {}
        for job in self.waiting.values():
            oldest[job.tenant_id] = max(oldest.get(job.tenant_id, 0.0), now - job.enqueued_at)
        return {tid: (t.contract.tier, t.waiting, oldest.get(tid, 0.0))
                for tid, t in self.tenants.items() if t.waiting}

    def tenant_in_flight(self, tenant_id: str) -> int:
        tenant = self.tenants.get(tenant_id)
        return tenant.in_flight if tenant else 0
