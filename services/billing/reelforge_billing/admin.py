"""Operators' reads and writes of rate cards, provider costs, free grants and tenant profiles.

Prices and costs are append-only rows with an effective date (the newest in effect applies), so the
history that explains past charges is never rewritten. Profiles are one row per tenant, upserted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from reelforge_billing.store import Profile


class UnknownPlan(Exception):
    pass


@dataclass(frozen=True)
class PriceRule:
    id: int
    model: str
    max_pixels: int
    micros_per_second: int
    plan_id: str | None
    tenant_id: str | None
    effective_from: datetime


@dataclass(frozen=True)
class ProviderCost:
    id: int
    pool: str
    model: str
    max_pixels: int
    micros_per_second: int
    effective_from: datetime


@dataclass(frozen=True)
class Grant:
    id: int
    tenant_id: str
    unit: str
    amount: Decimal
    remaining: Decimal
    expires_at: datetime | None
    created_at: datetime


LIST_LIMIT = 1000


async def add_price(
    pool: asyncpg.Pool, model: str, max_pixels: int, micros_per_second: int, plan_id: str | None,
    tenant_id: str | None, effective_from: datetime | None,
) -> PriceRule:
    try:
        row = await pool.fetchrow(
            "INSERT INTO price_rules (plan_id, tenant_id, model, max_pixels, micros_per_second, effective_from)"
            " VALUES ($1, $2, $3, $4, $5, coalesce($6, now())) RETURNING *",
            plan_id, tenant_id, model, max_pixels, micros_per_second, effective_from,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownPlan(f"no plan {plan_id!r}") from exc
    return _price(row)


async def list_prices(
    pool: asyncpg.Pool, model: str | None, plan_id: str | None, tenant_id: str | None
) -> list[PriceRule]:
    rows = await pool.fetch(
        "SELECT * FROM price_rules WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR plan_id = $2)"
        " AND ($3::text IS NULL OR tenant_id = $3) ORDER BY effective_from DESC, id DESC LIMIT $4",
        model, plan_id, tenant_id, LIST_LIMIT,
    )
    return [_price(r) for r in rows]


async def add_provider_cost(
    pool: asyncpg.Pool, pool_name: str, model: str, max_pixels: int, micros_per_second: int,
    effective_from: datetime | None,
) -> ProviderCost:
    row = await pool.fetchrow(
        "INSERT INTO provider_costs (pool, model, max_pixels, micros_per_second, effective_from)"
        " VALUES ($1, $2, $3, $4, coalesce($5, now())) RETURNING *",
        pool_name, model, max_pixels, micros_per_second, effective_from,
    )
    return _cost(row)


async def list_provider_costs(pool: asyncpg.Pool, pool_name: str | None, model: str | None) -> list[ProviderCost]:
    rows = await pool.fetch(
        "SELECT * FROM provider_costs WHERE ($1::text IS NULL OR pool = $1) AND ($2::text IS NULL OR model = $2)"
        " ORDER BY effective_from DESC, id DESC LIMIT $3",
        pool_name, model, LIST_LIMIT,
    )
    return [_cost(r) for r in rows]


async def get_grant(pool: asyncpg.Pool, grant_id: int) -> Grant:
    return _grant(await pool.fetchrow("SELECT * FROM free_grants WHERE id = $1", grant_id))


async def list_grants(pool: asyncpg.Pool, tenant_id: str, include_spent: bool) -> list[Grant]:
    rows = await pool.fetch(
        "SELECT * FROM free_grants WHERE tenant_id = $1"
        " AND ($2 OR (remaining > 0 AND (expires_at IS NULL OR expires_at > now())))"
        " ORDER BY id DESC LIMIT $3",
        tenant_id, include_spent, LIST_LIMIT,
    )
    return [_grant(r) for r in rows]


async def set_credit_limit(pool: asyncpg.Pool, tenant_id: str, credit_limit: int) -> None:
    """Postpaid up to `credit_limit` (above 0), else prepaid."""
    await pool.execute(
        "INSERT INTO billing_profiles (tenant_id, mode, credit_limit_micros) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant_id) DO UPDATE SET mode = $2, credit_limit_micros = $3",
        tenant_id, "postpaid" if credit_limit > 0 else "prepaid", credit_limit,
    )


async def set_monthly_budget(pool: asyncpg.Pool, tenant_id: str, budget: int | None) -> None:
    await pool.execute(
        "INSERT INTO billing_profiles (tenant_id, monthly_budget_micros) VALUES ($1, $2)"
        " ON CONFLICT (tenant_id) DO UPDATE SET monthly_budget_micros = $2",
        tenant_id, budget,
    )


async def set_tenant_plan(pool: asyncpg.Pool, tenant_id: str, plan_id: str) -> None:
    try:
        await pool.execute(
            "INSERT INTO billing_profiles (tenant_id, plan_id) VALUES ($1, $2)"
            " ON CONFLICT (tenant_id) DO UPDATE SET plan_id = $2",
            tenant_id, plan_id,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownPlan(f"no plan {plan_id!r}") from exc


def profile_fields(profile: Profile) -> dict[str, object]:
    return {"plan_id": profile.plan_id, "mode": profile.mode, "credit_limit_micros": profile.credit_limit,
            "monthly_budget_micros": profile.monthly_budget or 0}


def _price(r: asyncpg.Record) -> PriceRule:
    return PriceRule(r["id"], r["model"], r["max_pixels"], int(r["micros_per_second"]), r["plan_id"],
                     r["tenant_id"], r["effective_from"])


def _cost(r: asyncpg.Record) -> ProviderCost:
    return ProviderCost(r["id"], r["pool"], r["model"], r["max_pixels"], int(r["micros_per_second"]),
                        r["effective_from"])


def _grant(r: asyncpg.Record) -> Grant:
    return Grant(r["id"], r["tenant_id"], r["unit"], r["amount"], r["remaining"], r["expires_at"], r["created_at"])
