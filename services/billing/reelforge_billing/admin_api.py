"""gRPC edge of billing administration (BillingAdminService): validates, then calls admin/store."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_billing import admin
from reelforge_billing.grpc_api import Context, balance_message, instant, require_tenant
from reelforge_billing.store import LedgerStore

MAX_NAME = 100
# Far beyond any real price or credit; keeps arithmetic (price x seconds) well inside int64.
MAX_MICROS = 10**15
MAX_PIXELS = 100_000_000


class BillingAdminServicer(billing_pb2_grpc.BillingAdminServiceServicer):
    def __init__(self, store: LedgerStore, currency: str) -> None:
        self._store = store
        self._currency = currency

    async def SetPrice(self, request: billing_pb2.SetPriceRequest, context: Context) -> billing_pb2.PriceRule:
        await _require_name("model", request.model, context)
        await _check_rate(request.max_pixels, request.micros_per_second, context)
        if bool(request.plan_id) == bool(request.tenant_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "set exactly one of plan_id and tenant_id")
        if request.tenant_id:
            await require_tenant(request.tenant_id, context)
        try:
            rule = await admin.add_price(
                self._store.pool, request.model, request.max_pixels, request.micros_per_second,
                request.plan_id or None, request.tenant_id or None, await instant(request, "effective_from", context),
            )
        except admin.UnknownPlan as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return _price_message(rule)

    async def ListPrices(
        self, request: billing_pb2.ListPricesRequest, context: Context
    ) -> billing_pb2.ListPricesResponse:
        rules = await admin.list_prices(
            self._store.pool, request.model or None, request.plan_id or None, request.tenant_id or None
        )
        return billing_pb2.ListPricesResponse(rules=[_price_message(r) for r in rules])

    async def SetProviderCost(
        self, request: billing_pb2.SetProviderCostRequest, context: Context
    ) -> billing_pb2.ProviderCost:
        await _require_name("pool", request.pool, context)
        await _require_name("model", request.model, context)
        await _check_rate(request.max_pixels, request.micros_per_second, context)
        cost = await admin.add_provider_cost(
            self._store.pool, request.pool, request.model, request.max_pixels, request.micros_per_second,
            await instant(request, "effective_from", context),
        )
        return _cost_message(cost)

    async def ListProviderCosts(
        self, request: billing_pb2.ListProviderCostsRequest, context: Context
    ) -> billing_pb2.ListProviderCostsResponse:
        costs = await admin.list_provider_costs(self._store.pool, request.pool or None, request.model or None)
        return billing_pb2.ListProviderCostsResponse(costs=[_cost_message(c) for c in costs])

    async def IssueFreeGrant(
        self, request: billing_pb2.IssueFreeGrantRequest, context: Context
    ) -> billing_pb2.FreeGrant:
        await require_tenant(request.tenant_id, context)
        if (request.seconds != 0) == (request.micros != 0):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "set exactly one of seconds and micros")
        if request.seconds and not (math.isfinite(request.seconds) and 0 < request.seconds <= 10**9):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "seconds must be positive")
        if request.micros and not 0 < request.micros <= MAX_MICROS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "micros must be positive")
        expires = await instant(request, "expires_at", context)
        if expires is not None and expires <= datetime.now(UTC):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expires_at must be in the future")
        if request.seconds:
            grant_id = await self._store.add_free_grant(
                request.tenant_id, "seconds", Decimal(repr(request.seconds)).quantize(Decimal("0.001")), expires
            )
        else:
            grant_id = await self._store.add_free_grant(request.tenant_id, "micros", Decimal(request.micros), expires)
        return _grant_message(await admin.get_grant(self._store.pool, grant_id))

    async def ListFreeGrants(
        self, request: billing_pb2.ListFreeGrantsRequest, context: Context
    ) -> billing_pb2.ListFreeGrantsResponse:
        await require_tenant(request.tenant_id, context)
        grants = await admin.list_grants(self._store.pool, request.tenant_id, request.include_spent)
        return billing_pb2.ListFreeGrantsResponse(grants=[_grant_message(g) for g in grants])

    async def AddCredit(
        self, request: billing_pb2.AddCreditRequest, context: Context
    ) -> billing_pb2.AddCreditResponse:
        await require_tenant(request.tenant_id, context)
        if not 0 < request.amount_micros <= MAX_MICROS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "amount_micros must be positive")
        if not request.reference or len(request.reference) > 200:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "reference is required (at most 200 chars)")
        applied = await self._store.grant(request.tenant_id, request.amount_micros, request.reference)
        balance = await self._store.balance(request.tenant_id)
        return billing_pb2.AddCreditResponse(balance=balance_message(balance, self._currency), applied=applied)

    async def SetCreditLimit(
        self, request: billing_pb2.SetCreditLimitRequest, context: Context
    ) -> billing_pb2.BillingProfile:
        await require_tenant(request.tenant_id, context)
        if not 0 <= request.credit_limit_micros <= MAX_MICROS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "credit_limit_micros must not be negative")
        await admin.set_credit_limit(self._store.pool, request.tenant_id, request.credit_limit_micros)
        return await self._profile(request.tenant_id)

    async def SetMonthlyBudget(
        self, request: billing_pb2.SetMonthlyBudgetRequest, context: Context
    ) -> billing_pb2.BillingProfile:
        await require_tenant(request.tenant_id, context)
        if not 0 <= request.budget_micros <= MAX_MICROS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "budget_micros must not be negative")
        await admin.set_monthly_budget(self._store.pool, request.tenant_id, request.budget_micros or None)
        return await self._profile(request.tenant_id)

    async def UpsertPlan(self, request: billing_pb2.UpsertPlanRequest, context: Context) -> billing_pb2.Plan:
        await _require_name("plan_id", request.plan_id, context)
        await _require_name("name", request.name, context)
        await self._store.add_plan(request.plan_id, request.name)
        return billing_pb2.Plan(plan_id=request.plan_id, name=request.name)

    async def SetTenantPlan(
        self, request: billing_pb2.SetTenantPlanRequest, context: Context
    ) -> billing_pb2.BillingProfile:
        await require_tenant(request.tenant_id, context)
        await _require_name("plan_id", request.plan_id, context)
        try:
            await admin.set_tenant_plan(self._store.pool, request.tenant_id, request.plan_id)
        except admin.UnknownPlan as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return await self._profile(request.tenant_id)

    async def GetBillingProfile(
        self, request: billing_pb2.GetBillingProfileRequest, context: Context
    ) -> billing_pb2.BillingProfile:
        await require_tenant(request.tenant_id, context)
        return await self._profile(request.tenant_id)

    async def _profile(self, tenant_id: str) -> billing_pb2.BillingProfile:
        profile = await self._store.profile(tenant_id)
        return billing_pb2.BillingProfile(tenant_id=tenant_id, **admin.profile_fields(profile))  # type: ignore[arg-type]


async def _require_name(field: str, value: str, context: Context) -> None:
    if not value or len(value) > MAX_NAME:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is required (at most {MAX_NAME} chars)")


async def _check_rate(max_pixels: int, micros_per_second: int, context: Context) -> None:
    if not 0 < max_pixels <= MAX_PIXELS:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"max_pixels must be in (0, {MAX_PIXELS}]")
    if not 0 <= micros_per_second <= MAX_MICROS:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "micros_per_second must not be negative")


def _stamp(value: datetime | None) -> Timestamp | None:
    if value is None or value.year <= 1:  # '-infinity': in effect since always
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _price_message(rule: admin.PriceRule) -> billing_pb2.PriceRule:
    return billing_pb2.PriceRule(
        id=rule.id, model=rule.model, max_pixels=rule.max_pixels, micros_per_second=rule.micros_per_second,
        plan_id=rule.plan_id or "", tenant_id=rule.tenant_id or "", effective_from=_stamp(rule.effective_from),
    )


def _cost_message(cost: admin.ProviderCost) -> billing_pb2.ProviderCost:
    return billing_pb2.ProviderCost(
        id=cost.id, pool=cost.pool, model=cost.model, max_pixels=cost.max_pixels,
        micros_per_second=cost.micros_per_second, effective_from=_stamp(cost.effective_from),
    )


def _grant_message(grant: admin.Grant) -> billing_pb2.FreeGrant:
    return billing_pb2.FreeGrant(
        id=grant.id, tenant_id=grant.tenant_id, unit=grant.unit, amount=float(grant.amount),
        remaining=float(grant.remaining), expires_at=_stamp(grant.expires_at), created_at=_stamp(grant.created_at),
    )
