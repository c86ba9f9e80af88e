"""The admin gRPC API over a real server and a real PostgreSQL, with health and reflection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from reelforge.orchestrator.v1 import admin_pb2, admin_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_orchestrator import admin_api, config_store
from reelforge_orchestrator.scheduling.circuit import CircuitPolicy, CircuitState
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.pools import PoolSpec

from .test_live_scheduling import Harness, _harness

pytestmark = pytest.mark.asyncio


TOKEN = "test-operator-token"


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds the operator token to every call, as the CLI does."""

    async def intercept_unary_unary(self, continuation: Any, details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {TOKEN}")]
        return await continuation(grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials,
            details.wait_for_ready), request)


@contextlib.asynccontextmanager
async def _server(dsn: str, token: str | None) -> AsyncIterator[tuple[Harness, str]]:
    h = await _harness(dsn)
    server, _ = core_grpc.create_server([admin_api.SERVICE_NAME],
                                        admin_api.operator_auth(SecretStr(token) if token else None))
    admin_pb2_grpc.add_OrchestratorAdminServicer_to_server(admin_api.AdminServicer(h.pool, lambda: h.engine), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield h, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
        await h.leadership.release()
        await h.pool.close()


@contextlib.asynccontextmanager
async def _served(dsn: str) -> AsyncIterator[tuple[Harness, grpc.aio.Channel]]:
    """A live orchestrator harness with the admin API served over a real gRPC server (with the token)."""
    async with _server(dsn, TOKEN) as (h, target):
        channel = grpc.aio.insecure_channel(target, interceptors=[_Bearer()])
        try:
            yield h, channel
        finally:
            await channel.close()


async def test_admin_calls_need_the_operator_token(postgres_dsn: str) -> None:
    async with _server(postgres_dsn, TOKEN) as (_h, target), grpc.aio.insecure_channel(target) as channel:
        admin = admin_pb2_grpc.OrchestratorAdminStub(channel)
        for metadata, reason in [((), "missing operator token"),
                                 ((("authorization", "Bearer wrong-token"),), "invalid operator token"),
                                 ((("authorization", f"Basic {TOKEN}"),), "missing operator token")]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.GetPools(admin_pb2.GetPoolsRequest(), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id="animatic", mode=admin_pb2.POOL_MODE_PAUSE))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.SetPoolBreaker(admin_pb2.SetPoolBreakerRequest(
                pool_id="animatic", breaker=admin_pb2.CircuitBreakerPolicy(window=2, min_calls=1)))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _h.engine.scheduler.pools["animatic"].circuit.policy == CircuitPolicy()  # nothing changed
        pools = await admin.GetPools(admin_pb2.GetPoolsRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert pools is not None
        # health stays open for probes
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_without_a_configured_token_the_admin_api_refuses_everyone(postgres_dsn: str) -> None:
    async with _server(postgres_dsn, None) as (_h, target), grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin_pb2_grpc.OrchestratorAdminStub(channel).GetQueues(
                admin_pb2.GetQueuesRequest(), metadata=(("authorization", "Bearer anything"),))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "REELFORGE_ORCHESTRATOR_OPERATOR_TOKEN" in (refused.value.details() or "")


async def test_queues_pools_pause_and_contracts(postgres_dsn: str) -> None:
    async with _served(postgres_dsn) as (h, channel):
        admin = admin_pb2_grpc.OrchestratorAdminStub(channel)
        await config_store.upsert_pool(h.pool, PoolSpec("animatic", "animatic", "animatic", slots=2))
        await config_store.upsert_contract(h.pool, TenantContract("gold", tier="enterprise", max_concurrent=5))
        await h.engine.reload()
        for tenant in ["gold", "gold", "gold", "tin"]:
            await h.submit(tenant)
        await h.engine.step()

        queues = await admin.GetQueues(admin_pb2.GetQueuesRequest())
        by_tenant = {q.tenant_id: (q.tier, q.waiting, q.in_flight) for q in queues.tenants}
        assert by_tenant == {"gold": ("enterprise", 1, 2), "tin": ("standard", 1, 0)}
        assert {t.tier: (t.waiting, t.in_flight) for t in queues.tiers} == {"enterprise": (1, 2), "standard": (1, 0)}

        pools = (await admin.GetPools(admin_pb2.GetPoolsRequest())).pools
        assert [(p.pool_id, p.capacity, p.in_use, p.utilisation, p.circuit) for p in pools] == [
            ("animatic", 2, 2, 1.0, "closed")]

        paused = await admin.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id="animatic",
                                                                      mode=admin_pb2.POOL_MODE_PAUSE))
        assert paused.paused and not paused.draining
        assert h.engine.scheduler.pools["animatic"].paused  # applied to the leader at once
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await admin.SetPoolMode(admin_pb2.SetPoolModeRequest(pool_id="nope", mode=admin_pb2.POOL_MODE_DRAIN))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        changed = await admin.SetContract(admin_pb2.Contract(tenant_id="tin", tier="free", weight=2,
                                                             max_concurrent=1, daily_seconds_quota=100))
        assert (changed.tier, changed.max_concurrent, changed.daily_seconds_quota) == ("free", 1, 100)
        assert h.engine.scheduler.contract_for("tin").tier == "free"  # type: ignore[union-attr]
        got = await admin.GetContract(admin_pb2.GetContractRequest(tenant_id="tin"))
        assert got == changed
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await admin.SetContract(admin_pb2.Contract(tenant_id="tin", weight=-1))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=admin_api.SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        async for answer in reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")])):
            assert admin_api.SERVICE_NAME in [s.name for s in answer.list_services_response.service]
            break


async def test_pools_routes_and_contract_listing_apply_without_restart(postgres_dsn: str) -> None:
    async with _served(postgres_dsn) as (h, channel):
        admin = admin_pb2_grpc.OrchestratorAdminStub(channel)
        status = await admin.SetPool(admin_pb2.PoolSpec(
            pool_id="fal/animatic", provider="fal", model="animatic", slots=3, requests_per_minute=30,
            cost_micros_per_second={"480p": 10, "720p": 20}))
        assert (status.capacity, status.requests_per_minute, status.units_per_job, status.circuit) == (
            3, 30, 1, "closed")
        assert h.engine.scheduler.pools["fal/animatic"].capacity == 3  # the leader has it at once

        route = await admin.SetRoute(admin_pb2.Route(model="animatic", pool_ids=["fal/animatic", "animatic"]))
        assert list(route.pool_ids) == ["fal/animatic", "animatic"]
        assert h.engine.scheduler.router.routes["animatic"] == ["fal/animatic", "animatic"]
        routes = await admin.GetRoutes(admin_pb2.GetRoutesRequest())
        assert [(r.model, list(r.pool_ids)) for r in routes.routes if r.model == "animatic"] == [
            ("animatic", ["fal/animatic", "animatic"])]  # the OpenAI model names have routes of their own

        await admin.SetPool(admin_pb2.PoolSpec(pool_id="animatic", provider="animatic", model="animatic", slots=4,
                                               cost_micros_per_second={"480p": 50, "720p": 50, "1080p": 50}))
        job_id = await h.submit("tin", seconds=2.0)
        await h.engine.step()
        assert (await h.state(job_id))["pool_id"] == "fal/animatic"  # the cheaper pool of the new route

        for bad_route, code in [(admin_pb2.Route(model="animatic", pool_ids=["nope"]), grpc.StatusCode.NOT_FOUND),
                                (admin_pb2.Route(model="animatic", pool_ids=["animatic", "animatic"]),
                                 grpc.StatusCode.INVALID_ARGUMENT)]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.SetRoute(bad_route)
            assert refused.value.code() == code
        assert h.engine.scheduler.router.routes["animatic"] == ["fal/animatic", "animatic"]  # unchanged
        with pytest.raises(grpc.aio.AioRpcError) as bad_pool:
            await admin.SetPool(admin_pb2.PoolSpec(pool_id="x", provider="x", model="animatic",
                                                   cost_micros_per_second={"8k": 1}))
        assert bad_pool.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        await admin.SetContract(admin_pb2.Contract(tenant_id="tin", tier="enterprise", weight=3, max_concurrent=2))
        listed = await admin.ListContracts(admin_pb2.ListContractsRequest())
        assert [(c.tenant_id, c.tier) for c in listed.contracts] == [("*", "standard"), ("tin", "enterprise")]
        queues = await admin.GetQueues(admin_pb2.GetQueuesRequest())
        assert [(q.tenant_id, q.tier, q.weight, q.max_concurrent, q.in_flight) for q in queues.tenants] == [
            ("tin", "enterprise", 3.0, 2, 1)]


def _policy(status: admin_pb2.PoolStatus) -> tuple[int, int, float, float, int]:
    b = status.breaker
    return b.window, b.min_calls, b.error_rate, b.open_seconds, b.half_open_probes


async def test_a_pools_breaker_is_validated_stored_and_applied_to_the_live_pool(postgres_dsn: str) -> None:
    async with _served(postgres_dsn) as (h, channel):
        admin = admin_pb2_grpc.OrchestratorAdminStub(channel)
        await admin.SetPool(admin_pb2.PoolSpec(pool_id="animatic", provider="animatic", model="animatic", slots=4,
                                               cost_micros_per_second={"720p": 50}))
        status = await admin.SetPool(admin_pb2.PoolSpec(pool_id="fal/animatic", provider="fal", model="animatic",
                                                        slots=4, cost_micros_per_second={"720p": 10}))
        assert _policy(status) == (20, 5, 0.5, 30.0, 2)  # a new pool follows the process defaults
        assert status.breaker_overrides == admin_pb2.CircuitBreakerPolicy()
        await admin.SetRoute(admin_pb2.Route(model="animatic", pool_ids=["fal/animatic", "animatic"]))
        live = h.engine.scheduler.pools["fal/animatic"]

        # Bad policies: INVALID_ARGUMENT naming what is wrong, and nothing stored or applied.
        for breaker, problem in [
            (admin_pb2.CircuitBreakerPolicy(window=0), "window must be between 1 and 10000 outcomes (got 0)"),
            (admin_pb2.CircuitBreakerPolicy(error_rate=1.5), "error_rate must be above 0 and at most 1 (got 1.5)"),
            (admin_pb2.CircuitBreakerPolicy(min_calls=30),
             "min_calls 30 exceeds window 20 (the process default): the breaker could never open"),
            (admin_pb2.CircuitBreakerPolicy(open_seconds=0, half_open_probes=0),
             "open_seconds must be above 0 and at most 86400 (got 0.0); half_open_probes must be between 1 and"
             " 1000 (got 0)"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await admin.SetPoolBreaker(admin_pb2.SetPoolBreakerRequest(pool_id="fal/animatic", breaker=breaker))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert bad.value.details() == f"invalid breaker: {problem}"
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await admin.SetPool(admin_pb2.PoolSpec(pool_id="fal/animatic", provider="fal", model="animatic",
                                                   breaker=admin_pb2.CircuitBreakerPolicy(window=0)))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "window must be between 1 and 10000" in (bad.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await admin.SetPoolBreaker(admin_pb2.SetPoolBreakerRequest(breaker=admin_pb2.CircuitBreakerPolicy()))
        assert (bad.value.code(), bad.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "pool_id is required")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await admin.SetPoolBreaker(admin_pb2.SetPoolBreakerRequest(
                pool_id="nope", breaker=admin_pb2.CircuitBreakerPolicy(window=30)))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert live.circuit.policy == CircuitPolicy()
        row = await h.pool.fetchrow("SELECT circuit_window, circuit_open_seconds FROM capacity_pools"
                                    " WHERE pool_id = 'fal/animatic'")
        assert row is not None and tuple(row) == (None, None)

        # A short breaker for this pool alone: stored, shown, and in the leader's live pool at once.
        status = await admin.SetPoolBreaker(admin_pb2.SetPoolBreakerRequest(
            pool_id="fal/animatic", breaker=admin_pb2.CircuitBreakerPolicy(window=2, min_calls=2, open_seconds=600,
                                                                           half_open_probes=1)))
        assert _policy(status) == (2, 2, 0.5, 600.0, 1)
        assert status.breaker_overrides == admin_pb2.CircuitBreakerPolicy(window=2, min_calls=2, open_seconds=600,
                                                                          half_open_probes=1)
        assert live.circuit.policy == CircuitPolicy(window=2, min_calls=2, open_seconds=600, half_open_probes=1)
        assert h.engine.scheduler.pools["animatic"].circuit.policy == CircuitPolicy()
        # Changing the pool's capacity without a breaker keeps the stored one.
        status = await admin.SetPool(admin_pb2.PoolSpec(pool_id="fal/animatic", provider="fal", model="animatic",
                                                        slots=3, cost_micros_per_second={"720p": 10}))
        assert status.capacity == 3 and _policy(status) == (2, 2, 0.5, 600.0, 1)

        # Two failed renders open it (the defaults would want five); its traffic moves to the next pool.
        first = [await h.submit("tin", seconds=2.0) for _ in range(2)]
        await h.engine.step()
        assert [(await h.state(j))["pool_id"] for j in first] == ["fal/animatic", "fal/animatic"]
        for job_id in first:
            await h.render_result(job_id, ok=False, retriable=True, code="provider_error")
        assert live.circuit.state is CircuitState.OPEN
        pools = {p.pool_id: p for p in (await admin.GetPools(admin_pb2.GetPoolsRequest())).pools}
        assert (pools["fal/animatic"].circuit, pools["animatic"].circuit) == ("open", "closed")
        moved = await h.submit("tin", seconds=2.0)
        await h.engine.step()
        assert (await h.state(moved))["pool_id"] == "animatic"

        # A shorter cool-down, changed while it is open: the breaker stays open, and 2 s after it opened
        # a probe may go; its success closes the breaker and the pool takes work again.
        h.clock.now += 2.0
        status = await admin.SetPool(admin_pb2.PoolSpec(
            pool_id="fal/animatic", provider="fal", model="animatic", slots=3, cost_micros_per_second={"720p": 10},
            breaker=admin_pb2.CircuitBreakerPolicy(window=2, min_calls=2, open_seconds=1.5, half_open_probes=1)))
        assert (status.circuit, status.breaker.open_seconds) == ("open", 1.5)
        probe = await h.submit("tin", seconds=2.0)
        await h.engine.step()
        assert (await h.state(probe))["pool_id"] == "fal/animatic"
        assert live.circuit.state is CircuitState.HALF_OPEN
        await h.render_result(probe)
        assert live.circuit.state is CircuitState.CLOSED

        # An empty policy returns the pool to the process defaults (NULL columns).
        status = await admin.SetPoolBreaker(admin_pb2.SetPoolBreakerRequest(pool_id="fal/animatic"))
        assert _policy(status) == (20, 5, 0.5, 30.0, 2) and live.circuit.policy == CircuitPolicy()
        row = await h.pool.fetchrow("SELECT circuit_window, circuit_min_calls, circuit_error_rate,"
                                    " circuit_open_seconds, circuit_half_open_probes FROM capacity_pools"
                                    " WHERE pool_id = 'fal/animatic'")
        assert row is not None and set(row.values()) == {None}
