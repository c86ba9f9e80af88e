"""The admin gRPC API: queues per tenant and tier, pool utilisation, pause/drain, breakers, contracts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
import grpc
from prometheus_client import Counter
from pydantic import SecretStr

from reelforge.orchestrator.v1 import admin_pb2, admin_pb2_grpc
from reelforge_core.grpc_auth import OperatorTokenInterceptor
from reelforge_orchestrator import config_store
from reelforge_orchestrator.engine import Engine
from reelforge_orchestrator.scheduling.circuit import CircuitOverrides, CircuitPolicy, policy_problems
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.pools import PoolSpec

M = TypeVar("M")

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["OrchestratorAdmin"].full_name

ADMIN_CHANGES = Counter("reelforge_admin_changes_total",
                        "Configuration changes through the admin API, by kind"
                        " (contract, pool, pool_mode, pool_breaker, route)",
                        ["kind"])


def operator_auth(token: SecretStr | None) -> OperatorTokenInterceptor:
    """Every admin call needs the operator token (the console's); with none configured, none is served."""
    return OperatorTokenInterceptor(token, [SERVICE_NAME], "REELFORGE_ORCHESTRATOR_OPERATOR_TOKEN")


_MODES = {
    admin_pb2.POOL_MODE_RESUME: (False, False),
    admin_pb2.POOL_MODE_PAUSE: (True, False),
    admin_pb2.POOL_MODE_DRAIN: (False, True),
}


def _set_present(message: M, values: dict[str, Any]) -> M:
    """Sets the message's optional fields whose value is not None (the others stay unset)."""
    for name, value in values.items():
        if value is not None:
            setattr(message, name, value)
    return message


def contract_to_proto(c: TenantContract) -> admin_pb2.Contract:
    message = admin_pb2.Contract(
        tenant_id=c.tenant_id, tier=c.tier, weight=c.weight, max_concurrent=c.max_concurrent,
        requests_per_minute=c.requests_per_minute, allowed_models=sorted(c.allowed_models),
        max_seconds=c.max_seconds, max_pixels=c.max_pixels,
    )
    return _set_present(message, {"daily_seconds_quota": c.daily_seconds_quota,
                                  "monthly_seconds_quota": c.monthly_seconds_quota,
                                  "default_deadline_seconds": c.default_deadline_seconds})


def contract_from_proto(m: admin_pb2.Contract) -> TenantContract:
    return TenantContract(
        tenant_id=m.tenant_id, tier=m.tier or "standard", weight=m.weight or 1.0,
        max_concurrent=m.max_concurrent or 8, requests_per_minute=m.requests_per_minute or 600,
        daily_seconds_quota=m.daily_seconds_quota if m.HasField("daily_seconds_quota") else None,
        monthly_seconds_quota=m.monthly_seconds_quota if m.HasField("monthly_seconds_quota") else None,
        allowed_models=frozenset(m.allowed_models), max_seconds=m.max_seconds or 60.0,
        max_pixels=m.max_pixels or 3840 * 2160,
        default_deadline_seconds=m.default_deadline_seconds if m.HasField("default_deadline_seconds") else None,
    )


def breaker_to_proto(p: CircuitPolicy | CircuitOverrides) -> admin_pb2.CircuitBreakerPolicy:
    """A policy (every field set) or a pool's overrides (only the fields it sets)."""
    return _set_present(admin_pb2.CircuitBreakerPolicy(), {
        "window": p.window, "min_calls": p.min_calls, "error_rate": p.error_rate_to_open,
        "open_seconds": p.open_seconds, "half_open_probes": p.half_open_probes})


def breaker_from_proto(m: admin_pb2.CircuitBreakerPolicy) -> CircuitOverrides:
    return CircuitOverrides(
        window=m.window if m.HasField("window") else None,
        min_calls=m.min_calls if m.HasField("min_calls") else None,
        error_rate_to_open=m.error_rate if m.HasField("error_rate") else None,
        open_seconds=m.open_seconds if m.HasField("open_seconds") else None,
        half_open_probes=m.half_open_probes if m.HasField("half_open_probes") else None,
    )


def pool_from_proto(m: admin_pb2.PoolSpec) -> PoolSpec:
    return PoolSpec(
        pool_id=m.pool_id, provider=m.provider, model=m.model, slots=m.slots or 4,
        requests_per_minute=m.requests_per_minute or 600,
        cost_micros_per_second={k: int(v) for k, v in m.cost_micros_per_second.items()},
        latency_seconds_per_output_second=m.latency_seconds_per_output_second or 1.0,
        fixed_latency_seconds=m.fixed_latency_seconds, gpus=m.gpus, gpus_per_job=m.gpus_per_job or 8,
        gpu_seconds_per_output_second=m.gpu_seconds_per_output_second or 8.0,
        circuit=breaker_from_proto(m.breaker),
    )


class AdminServicer(admin_pb2_grpc.OrchestratorAdminServicer):
    def __init__(self, pool: asyncpg.Pool, engine: Callable[[], Engine | None],
                 default_circuit: CircuitPolicy | None = None) -> None:
        self._pool = pool
        self._engine = engine  # the engine while this instance leads, else None
        self._default_circuit = default_circuit or CircuitPolicy()  # this process's breaker settings

    async def GetQueues(
        self, request: admin_pb2.GetQueuesRequest, context: Context
    ) -> admin_pb2.GetQueuesResponse:
        rows = await self._pool.fetch(
            "SELECT j.tenant_id, coalesce(c.tier, d.tier) AS tier, coalesce(c.weight, d.weight) AS weight,"
            " coalesce(c.max_concurrent, d.max_concurrent) AS max_concurrent,"
            " count(*) FILTER (WHERE j.state = 'admitted' OR (j.state = 'rendering' AND j.pool_id IS NULL)) AS waiting,"
            " count(*) FILTER (WHERE (j.state = 'rendering' AND j.pool_id IS NOT NULL) OR j.state = 'postprocessing')"
            "   AS in_flight,"
            " coalesce(extract(epoch FROM now() - min(j.admitted_at) FILTER (WHERE j.state = 'admitted'"
            "   OR (j.state = 'rendering' AND j.pool_id IS NULL))), 0)::float8 AS oldest"
            " FROM jobs j LEFT JOIN tenant_contracts c ON c.tenant_id = j.tenant_id"
            " JOIN tenant_contracts d ON d.tenant_id = '*'"
            " WHERE j.state IN ('admitted', 'rendering', 'postprocessing')"
            " GROUP BY j.tenant_id, 2, 3, 4 ORDER BY j.tenant_id"
        )
        response = admin_pb2.GetQueuesResponse()
        tiers: dict[str, admin_pb2.TierQueue] = {}
        for row in rows:
            response.tenants.add(tenant_id=row["tenant_id"], tier=row["tier"], waiting=row["waiting"],
                                 in_flight=row["in_flight"], oldest_wait_seconds=row["oldest"],
                                 weight=row["weight"], max_concurrent=row["max_concurrent"])
            tier = tiers.setdefault(row["tier"], admin_pb2.TierQueue(tier=row["tier"]))
            tier.waiting += row["waiting"]
            tier.in_flight += row["in_flight"]
            tier.oldest_wait_seconds = max(tier.oldest_wait_seconds, row["oldest"])
        response.tiers.extend(tiers[name] for name in sorted(tiers))
        return response

    async def _pool_statuses(self, only: str | None = None) -> list[admin_pb2.PoolStatus]:
        config = await config_store.load(self._pool)
        busy = {r["pool_id"]: r["n"] for r in await self._pool.fetch(
            "SELECT pool_id, count(*) AS n FROM jobs WHERE state = 'rendering' AND pool_id IS NOT NULL"
            " GROUP BY pool_id")}
        engine = self._engine()
        statuses = []
        for spec in config.pools:
            if only is not None and spec.pool_id != only:
                continue
            in_use = busy.get(spec.pool_id, 0) * spec.units_per_job
            live = engine.scheduler.pools.get(spec.pool_id) if engine is not None else None
            paused, draining = config.pool_modes[spec.pool_id]
            status = admin_pb2.PoolStatus(
                pool_id=spec.pool_id, provider=spec.provider, model=spec.model, capacity=spec.capacity,
                in_use=in_use, utilisation=in_use / spec.capacity if spec.capacity else 0.0, paused=paused,
                draining=draining, circuit=live.circuit.state.value if live is not None else "",
                requests_per_minute=spec.requests_per_minute, units_per_job=spec.units_per_job,
                breaker=breaker_to_proto(live.circuit.policy if live is not None
                                         else spec.circuit.over(self._default_circuit)),
                breaker_overrides=breaker_to_proto(spec.circuit),
            )
            if live is not None:
                status.successes, status.failures = live.successes, live.failures
                status.error_rate = live.circuit.error_rate
                status.latency_seconds_per_output_second = live.latency_per_second
            statuses.append(status)
        return statuses

    async def GetPools(
        self, request: admin_pb2.GetPoolsRequest, context: Context
    ) -> admin_pb2.GetPoolsResponse:
        return admin_pb2.GetPoolsResponse(pools=await self._pool_statuses())

    async def SetPoolMode(
        self, request: admin_pb2.SetPoolModeRequest, context: Context
    ) -> admin_pb2.PoolStatus:
        if request.mode not in _MODES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "mode must be resume, pause or drain")
        paused, draining = _MODES[request.mode]
        if not await config_store.set_pool_mode(self._pool, request.pool_id, paused, draining):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no pool {request.pool_id!r}")
        ADMIN_CHANGES.labels("pool_mode").inc()
        await self._apply()
        return (await self._pool_statuses(request.pool_id))[0]

    async def GetContract(
        self, request: admin_pb2.GetContractRequest, context: Context
    ) -> admin_pb2.Contract:
        row = await self._pool.fetchrow("SELECT * FROM tenant_contracts WHERE tenant_id = $1", request.tenant_id)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no contract for {request.tenant_id!r}")
        return contract_to_proto(config_store.contract_from_row(row))

    async def SetContract(
        self, request: admin_pb2.Contract, context: Context
    ) -> admin_pb2.Contract:
        if not request.tenant_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id is required")
        try:
            contract = contract_from_proto(request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await config_store.upsert_contract(self._pool, contract)
        ADMIN_CHANGES.labels("contract").inc()
        await self._apply()
        return contract_to_proto(contract)

    async def ListContracts(
        self, request: admin_pb2.ListContractsRequest, context: Context
    ) -> admin_pb2.ListContractsResponse:
        rows = await self._pool.fetch("SELECT * FROM tenant_contracts ORDER BY tenant_id")
        return admin_pb2.ListContractsResponse(
            contracts=[contract_to_proto(config_store.contract_from_row(row)) for row in rows])

    async def SetPool(self, request: admin_pb2.PoolSpec, context: Context) -> admin_pb2.PoolStatus:
        if not (request.pool_id and request.provider and request.model):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pool_id, provider and model are required")
        unknown = set(request.cost_micros_per_second) - {"480p", "720p", "1080p", "4k"}
        if unknown:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"unknown resolution classes {sorted(unknown)}: use 480p, 720p, 1080p, 4k")
        spec = pool_from_proto(request)
        if request.HasField("breaker"):
            await self._check_breaker(spec.circuit, context)
        await config_store.upsert_pool(self._pool, spec, set_breaker=request.HasField("breaker"))
        ADMIN_CHANGES.labels("pool").inc()
        await self._apply()
        return (await self._pool_statuses(request.pool_id))[0]

    async def SetPoolBreaker(
        self, request: admin_pb2.SetPoolBreakerRequest, context: Context
    ) -> admin_pb2.PoolStatus:
        if not request.pool_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pool_id is required")
        circuit = breaker_from_proto(request.breaker)
        await self._check_breaker(circuit, context)
        if not await config_store.set_pool_breaker(self._pool, request.pool_id, circuit):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no pool {request.pool_id!r}")
        ADMIN_CHANGES.labels("pool_breaker").inc()
        await self._apply()
        return (await self._pool_statuses(request.pool_id))[0]

    async def _check_breaker(self, circuit: CircuitOverrides, context: Context) -> None:
        problems = policy_problems(circuit, self._default_circuit)
        if problems:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid breaker: " + "; ".join(problems))

    async def GetRoutes(
        self, request: admin_pb2.GetRoutesRequest, context: Context
    ) -> admin_pb2.GetRoutesResponse:
        config = await config_store.load(self._pool)
        return admin_pb2.GetRoutesResponse(routes=[
            admin_pb2.Route(model=model, pool_ids=pool_ids) for model, pool_ids in sorted(config.routes.items())])

    async def SetRoute(self, request: admin_pb2.Route, context: Context) -> admin_pb2.Route:
        if not request.model:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model is required")
        if len(set(request.pool_ids)) != len(request.pool_ids):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a pool appears twice in the route")
        missing = await config_store.set_route(self._pool, request.model, list(request.pool_ids))
        if missing:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no pools {missing}")
        ADMIN_CHANGES.labels("route").inc()
        await self._apply()
        return admin_pb2.Route(model=request.model, pool_ids=request.pool_ids)

    async def _apply(self) -> None:
        engine = self._engine()
        if engine is not None:
            await engine.reload()
