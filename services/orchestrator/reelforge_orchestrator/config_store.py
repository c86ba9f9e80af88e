"""Contracts, pools and routes in Postgres, read into the scheduler's types (and written by admin)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from reelforge_orchestrator.scheduling.circuit import CircuitOverrides
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.pools import PoolSpec

DEFAULT_TENANT = "*"


@dataclass(frozen=True)
class SchedulingConfig:
    contracts: list[TenantContract]
    default_contract: TenantContract | None
    pools: list[PoolSpec]
    pool_modes: dict[str, tuple[bool, bool]]  # pool -> (paused, draining)
    routes: dict[str, list[str]]


def contract_from_row(row: asyncpg.Record) -> TenantContract:
    return TenantContract(
        tenant_id=row["tenant_id"], tier=row["tier"], weight=row["weight"], max_concurrent=row["max_concurrent"],
        requests_per_minute=row["requests_per_minute"], daily_seconds_quota=row["daily_seconds_quota"],
        monthly_seconds_quota=row["monthly_seconds_quota"], allowed_models=frozenset(row["allowed_models"] or ()),
        max_seconds=row["max_seconds"], max_pixels=row["max_pixels"],
        default_deadline_seconds=row["default_deadline_seconds"],
    )


def pool_from_row(row: asyncpg.Record) -> PoolSpec:
    costs = row["cost_micros_per_second"]
    if isinstance(costs, str):
        costs = json.loads(costs)
    return PoolSpec(
        pool_id=row["pool_id"], provider=row["provider"], model=row["model"], slots=row["slots"],
        requests_per_minute=row["requests_per_minute"], cost_micros_per_second={k: int(v) for k, v in costs.items()},
        latency_seconds_per_output_second=row["latency_seconds_per_output_second"],
        fixed_latency_seconds=row["fixed_latency_seconds"], gpus=row["gpus"], gpus_per_job=row["gpus_per_job"],
        gpu_seconds_per_output_second=row["gpu_seconds_per_output_second"], circuit=circuit_from_row(row),
    )


def circuit_from_row(row: asyncpg.Record) -> CircuitOverrides:
    return CircuitOverrides(
        window=row["circuit_window"], min_calls=row["circuit_min_calls"],
        error_rate_to_open=row["circuit_error_rate"], open_seconds=row["circuit_open_seconds"],
        half_open_probes=row["circuit_half_open_probes"],
    )


def _circuit_args(c: CircuitOverrides) -> tuple[int | None, int | None, float | None, float | None, int | None]:
    return c.window, c.min_calls, c.error_rate_to_open, c.open_seconds, c.half_open_probes


async def load(conn: asyncpg.Connection | asyncpg.Pool) -> SchedulingConfig:
    contracts, default = [], None
    for row in await conn.fetch("SELECT * FROM tenant_contracts"):
        contract = contract_from_row(row)
        if contract.tenant_id == DEFAULT_TENANT:
            default = contract
        else:
            contracts.append(contract)
    pool_rows = await conn.fetch("SELECT * FROM capacity_pools ORDER BY pool_id")
    routes: dict[str, list[str]] = {}
    for row in await conn.fetch("SELECT model, pool_id FROM model_routes ORDER BY model, position"):
        routes.setdefault(row["model"], []).append(row["pool_id"])
    return SchedulingConfig(
        contracts=contracts, default_contract=default, pools=[pool_from_row(r) for r in pool_rows],
        pool_modes={r["pool_id"]: (r["paused"], r["draining"]) for r in pool_rows}, routes=routes,
    )


async def upsert_contract(conn: asyncpg.Connection | asyncpg.Pool, c: TenantContract) -> None:
    await conn.execute(
        "INSERT INTO tenant_contracts (tenant_id, tier, weight, max_concurrent, requests_per_minute,"
        " daily_seconds_quota, monthly_seconds_quota, allowed_models, max_seconds, max_pixels,"
        " default_deadline_seconds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (tenant_id) DO UPDATE SET tier = EXCLUDED.tier, weight = EXCLUDED.weight,"
        " max_concurrent = EXCLUDED.max_concurrent, requests_per_minute = EXCLUDED.requests_per_minute,"
        " daily_seconds_quota = EXCLUDED.daily_seconds_quota, monthly_seconds_quota = EXCLUDED.monthly_seconds_quota,"
        " allowed_models = EXCLUDED.allowed_models, max_seconds = EXCLUDED.max_seconds,"
        " max_pixels = EXCLUDED.max_pixels, default_deadline_seconds = EXCLUDED.default_deadline_seconds,"
        " updated_at = now()",
        c.tenant_id, c.tier, c.weight, c.max_concurrent, c.requests_per_minute, c.daily_seconds_quota,
        c.monthly_seconds_quota, sorted(c.allowed_models), c.max_seconds, c.max_pixels, c.default_deadline_seconds,
    )


async def upsert_pool(conn: asyncpg.Connection | asyncpg.Pool, p: PoolSpec, routes_position: int | None = None,
                      *, set_breaker: bool = False) -> None:
    """Creates or changes a pool; with `routes_position`, also routes its model to it at that place.

    An existing pool keeps its stored breaker policy unless `set_breaker` (then `p.circuit` replaces it)."""
    await conn.execute(
        "INSERT INTO capacity_pools (pool_id, provider, model, slots, requests_per_minute, cost_micros_per_second,"
        " latency_seconds_per_output_second, fixed_latency_seconds, gpus, gpus_per_job,"
        " gpu_seconds_per_output_second, circuit_window, circuit_min_calls, circuit_error_rate,"
        " circuit_open_seconds, circuit_half_open_probes)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        " ON CONFLICT (pool_id) DO UPDATE SET provider = EXCLUDED.provider, model = EXCLUDED.model,"
        " slots = EXCLUDED.slots, requests_per_minute = EXCLUDED.requests_per_minute,"
        " cost_micros_per_second = EXCLUDED.cost_micros_per_second,"
        " latency_seconds_per_output_second = EXCLUDED.latency_seconds_per_output_second,"
        " fixed_latency_seconds = EXCLUDED.fixed_latency_seconds, gpus = EXCLUDED.gpus,"
        " gpus_per_job = EXCLUDED.gpus_per_job, gpu_seconds_per_output_second = EXCLUDED.gpu_seconds_per_output_second,"
        " circuit_window = CASE WHEN $17 THEN EXCLUDED.circuit_window ELSE capacity_pools.circuit_window END,"
        " circuit_min_calls = CASE WHEN $17 THEN EXCLUDED.circuit_min_calls ELSE capacity_pools.circuit_min_calls END,"
        " circuit_error_rate = CASE WHEN $17 THEN EXCLUDED.circuit_error_rate"
        "   ELSE capacity_pools.circuit_error_rate END,"
        " circuit_open_seconds = CASE WHEN $17 THEN EXCLUDED.circuit_open_seconds"
        "   ELSE capacity_pools.circuit_open_seconds END,"
        " circuit_half_open_probes = CASE WHEN $17 THEN EXCLUDED.circuit_half_open_probes"
        "   ELSE capacity_pools.circuit_half_open_probes END,"
        " updated_at = now()",
        p.pool_id, p.provider, p.model, p.slots, p.requests_per_minute, json.dumps(p.cost_micros_per_second),
        p.latency_seconds_per_output_second, p.fixed_latency_seconds, p.gpus, p.gpus_per_job,
        p.gpu_seconds_per_output_second, *_circuit_args(p.circuit), set_breaker,
    )
    if routes_position is not None:
        await _insert_into_route(conn, p.model, routes_position, p.pool_id)


async def _insert_into_route(conn: asyncpg.Connection | asyncpg.Pool, model: str, position: int, pool_id: str) -> None:
    """Puts `pool_id` at `position` of the model's route; the pools from there on move one place down
    (none is dropped)."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as acquired:
            await _insert_into_route(acquired, model, position, pool_id)
        return
    async with conn.transaction():
        rows = await conn.fetch(
            "DELETE FROM model_routes WHERE model = $1 RETURNING position, pool_id", model)
        order = [row["pool_id"] for row in sorted(rows, key=lambda row: row["position"]) if row["pool_id"] != pool_id]
        order.insert(min(position, len(order)), pool_id)
        await conn.executemany("INSERT INTO model_routes (model, position, pool_id) VALUES ($1, $2, $3)",
                               [(model, place, pool) for place, pool in enumerate(order)])


async def set_pool_mode(conn: asyncpg.Connection | asyncpg.Pool, pool_id: str, paused: bool, draining: bool) -> bool:
    done = await conn.execute(
        "UPDATE capacity_pools SET paused = $2, draining = $3, updated_at = now() WHERE pool_id = $1",
        pool_id, paused, draining,
    )
    return bool(done.endswith(" 1"))


async def set_pool_breaker(conn: asyncpg.Connection | asyncpg.Pool, pool_id: str, circuit: CircuitOverrides) -> bool:
    """Replaces the pool's breaker policy (None fields: the process defaults); False if there is no such pool."""
    done = await conn.execute(
        "UPDATE capacity_pools SET circuit_window = $2, circuit_min_calls = $3, circuit_error_rate = $4,"
        " circuit_open_seconds = $5, circuit_half_open_probes = $6, updated_at = now() WHERE pool_id = $1",
        pool_id, *_circuit_args(circuit),
    )
    return bool(done.endswith(" 1"))


async def set_route(conn: asyncpg.Pool, model: str, pool_ids: list[str]) -> list[str]:
    """Replaces the model's route; returns the pool ids that do not exist (then nothing changed)."""
    async with conn.acquire() as c, c.transaction():
        known = {r["pool_id"] for r in await c.fetch("SELECT pool_id FROM capacity_pools WHERE pool_id = ANY($1)",
                                                    pool_ids)}
        missing = [pool_id for pool_id in pool_ids if pool_id not in known]
        if missing:
            return missing
        await c.execute("DELETE FROM model_routes WHERE model = $1", model)
        await c.executemany("INSERT INTO model_routes (model, position, pool_id) VALUES ($1, $2, $3)",
                            [(model, position, pool_id) for position, pool_id in enumerate(pool_ids)])
    return []
