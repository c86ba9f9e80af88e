"""Routing: a model maps to an ordered list of pools; a job goes to the cheapest healthy pool with
room that can finish it before its deadline, spilling to the next when one is full."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reelforge_orchestrator.scheduling.pools import PoolState, resolution_class


class Job:
    """A job as the scheduler sees it."""

    __slots__ = (
        "attempt",
        "avoid",
        "deadline",
        "enqueued_at",
        "height",
        "job_id",
        "model",
        "not_before",
        "removed",
        "resolution",
        "seconds",
        "tenant_id",
        "width",
    )

    def __init__(self, job_id: str, tenant_id: str, model: str, seconds: float, width: int, height: int,
                 enqueued_at: float, deadline: float | None = None, attempt: int = 0) -> None:
        self.job_id = job_id
        self.tenant_id = tenant_id
        self.model = model
        self.seconds = seconds
        self.width = width
        self.height = height
        self.deadline = deadline
        self.enqueued_at = enqueued_at
        self.attempt = attempt          # render attempts already made
        self.avoid: frozenset[str] = frozenset()  # pools that failed this job
        self.not_before = 0.0           # backoff after a failed attempt
        self.removed = False            # cancelled or expired while waiting
        self.resolution = resolution_class(width, height)


class Router:
    def __init__(self, pools: Mapping[str, PoolState], routes: Mapping[str, Iterable[str]]) -> None:
        self._pools = pools
        self._routes: dict[str, list[str]] = {}
        self._ranked: dict[tuple[str, str], list[PoolState]] = {}
        self._by_model: dict[str, list[PoolState]] = {}
        self._models_of: dict[str, frozenset[str]] | None = None
        self.routes = {model: list(ids) for model, ids in routes.items()}

    @property
    def routes(self) -> dict[str, list[str]]:
        return self._routes

    @routes.setter
    def routes(self, routes: dict[str, list[str]]) -> None:
        self._routes = routes
        self.invalidate()

    def invalidate(self) -> None:
        """Pools or prices changed: rank again."""
        self._ranked.clear()
        self._by_model.clear()
        self._models_of = None

    def models_of(self, pool_id: str) -> frozenset[str]:
        """The requested models whose routes include the pool."""
        models_of = self._models_of
        if models_of is None:
            found: dict[str, set[str]] = {}
            for model, pool_ids in self._routes.items():
                for each in pool_ids:
                    found.setdefault(each, set()).add(model)
            models_of = self._models_of = {pool_id: frozenset(models) for pool_id, models in found.items()}
        return models_of.get(pool_id, frozenset())

    def pools_for(self, model: str) -> list[PoolState]:
        pools = self._by_model.get(model)
        if pools is None:
            pools = [self._pools[pool_id] for pool_id in self._routes.get(model, ()) if pool_id in self._pools]
            self._by_model[model] = pools
        return pools

    def _cheapest_first(self, model: str, resolution: str) -> list[PoolState]:
        key = (model, resolution)
        ranked = self._ranked.get(key)
        if ranked is None:
            ranked = [p for p in self.pools_for(model) if p.spec.serves_class(resolution)]
            ranked.sort(key=lambda p: p.spec.cost_for(resolution, 1.0))  # stable: route order breaks ties
            self._ranked[key] = ranked
        return ranked

    def serves(self, model: str, resolution: str) -> bool:
        """Whether any pool routed for the model serves the resolution class."""
        return bool(self._cheapest_first(model, resolution))

    def candidates(self, job: Job) -> list[PoolState]:
        """Pools that could serve the job at all, cheapest first (route order breaks ties)."""
        pools = self._cheapest_first(job.model, job.resolution)
        if job.avoid:
            others = [p for p in pools if p.pool_id not in job.avoid]
            return others or pools
        return pools

    def choose(self, job: Job, now: float) -> PoolState | None:
        deadline = job.deadline
        for pool in self.candidates(job):
            if not pool.can_start(now):
                continue
            if deadline is not None and now + pool.estimated_seconds(job.seconds, job.width, job.height) > deadline:
                continue
            return pool
        return None

    def hopeless(self, job: Job, now: float) -> str | None:
        """Why the job can never run (code), or None if some pool might still take it in time."""
        pools = self.candidates(job)
        if not pools:
            return "no_route"
        if job.deadline is None:
            return None
        fastest = min(p.estimated_seconds(job.seconds, job.width, job.height) for p in pools)
        return "deadline_exceeded" if now + fastest > job.deadline else None
