"""The ops console: one page for operators at /console (queues per tier and tenant, pool capacity
and health, recent failures with their codes, spend today) and its data as JSON at
/console/api/state, behind the operator token (`REELFORGE_ORCHESTRATOR_OPERATOR_TOKEN`).

The page is static (HTML + a little JS that polls the JSON with `Authorization: Bearer`); the
token travels in the URL fragment (`/console#token=...`), which browsers never send to a server.
Queues and pools come from the admin API's own reads, failures from the jobs table, spend from
billing over gRPC (if billing does not answer, the rest of the page still does).
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import grpc
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from reelforge.orchestrator.v1 import admin_pb2
from reelforge_orchestrator.admin_api import AdminServicer, Context
from reelforge_orchestrator.billing_client import BillingClient

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
RECENT_FAILURES = 20
SPEND_CACHE_SECONDS = 5.0  # every open console polls; billing sums a day of ledger at most this often
FAILURE_WINDOW = timedelta(hours=1)
_NO_CONTEXT = cast(Context, None)  # the admin API's reads never touch their gRPC context

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self';"
                               " img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}
_ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}


def _problem(status: int, code: str, title: str, detail: str) -> JSONResponse:
    body = {"type": f"urn:reelforge:problem:{code}", "title": title, "status": status, "detail": detail, "code": code}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=_HEADERS)


class Console:
    def __init__(self, admin: AdminServicer, pool: asyncpg.Pool, billing: BillingClient,
                 token: SecretStr | None) -> None:
        self._admin = admin
        self._pool = pool
        self._billing = billing
        self._token = token.get_secret_value().encode() if token is not None else None
        self._spend_cache: tuple[float, dict[str, Any]] | None = None

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)

        @router.get("/console")
        async def page() -> Response:
            return Response((HERE / "console.html").read_bytes(), media_type="text/html; charset=utf-8",
                            headers=_HEADERS)

        @router.get("/console/{asset}")
        async def asset(asset: str) -> Response:
            if asset not in _ASSETS:
                return _problem(404, "not_found", "Not found", "no such console asset")
            return Response((HERE / asset).read_bytes(), media_type=_ASSETS[asset], headers=_HEADERS)

        @router.get("/console/api/state")
        async def api_state(request: Request) -> Response:
            refused = self._refusal(request.headers.get("authorization", ""))
            if refused is not None:
                return refused
            return JSONResponse(await self.state(), headers=_HEADERS)

        return router

    def _refusal(self, authorization: str) -> JSONResponse | None:
        if self._token is None:
            return _problem(404, "console_disabled", "Console disabled",
                            "set REELFORGE_ORCHESTRATOR_OPERATOR_TOKEN to enable the ops console")
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return _problem(401, "missing_operator_token", "Operator token required",
                            "send the operator token as 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            return _problem(401, "invalid_operator_token", "Invalid operator token",
                            "the operator token is not valid")
        return None

    async def state(self) -> dict[str, Any]:
        queues = await self._admin.GetQueues(admin_pb2.GetQueuesRequest(), _NO_CONTEXT)
        pools = await self._admin.GetPools(admin_pb2.GetPoolsRequest(), _NO_CONTEXT)
        return {
            "generated_at": datetime.now(UTC).isoformat(),
            "tiers": [_queue(q, tier=q.tier) for q in queues.tiers],
            "tenants": [_queue(q, tenant_id=q.tenant_id, tier=q.tier) for q in queues.tenants],
            "pools": [_pool(p) for p in pools.pools],
            "failures": await self._failures(),
            "spend": await self._spend(),
        }

    async def _failures(self) -> dict[str, Any]:
        recent = await self._pool.fetch(
            "SELECT job_id, tenant_id, state, error_code, error_message, provider, pool_id, updated_at FROM jobs"
            " WHERE state IN ('failed', 'expired') ORDER BY updated_at DESC LIMIT $1", RECENT_FAILURES)
        by_code = await self._pool.fetch(
            "SELECT coalesce(error_code, 'unknown') AS code, count(*) AS n FROM jobs"
            " WHERE state IN ('failed', 'expired') AND updated_at > now() - $1::interval"
            " GROUP BY 1 ORDER BY 2 DESC, 1", FAILURE_WINDOW)
        return {
            "window": "1 hour",
            "by_code": [{"code": r["code"], "count": r["n"]} for r in by_code],
            "recent": [{
                "job_id": r["job_id"], "tenant_id": r["tenant_id"], "state": r["state"],
                "code": r["error_code"] or "unknown", "message": (r["error_message"] or "")[:300],
                "pool": r["pool_id"] or r["provider"] or "", "at": r["updated_at"].isoformat(),
            } for r in recent],
        }

    async def _spend(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._spend_cache is not None and now - self._spend_cache[0] < SPEND_CACHE_SECONDS:
            return self._spend_cache[1]
        spend = await self._fetch_spend()
        if spend["available"]:
            self._spend_cache = (now, spend)
        return spend

    async def _fetch_spend(self) -> dict[str, Any]:
        try:
            spend = await self._billing.spend()
        except grpc.aio.AioRpcError as exc:
            log.warning("spend unavailable from billing", extra={"error": exc.details() or exc.code().name})
            return {"available": False, "error": f"billing: {exc.code().name.lower()}"}
        return {
            "available": True, "day": spend.day, "currency": spend.currency,
            "charged_micros": spend.charged_micros, "free_micros": spend.free_micros,
            "provider_cost_micros": spend.provider_cost_micros,
            "tenants": [{"tenant_id": t.tenant_id, "jobs": t.jobs, "charged_micros": t.charged_micros,
                         "free_micros": t.free_micros, "provider_cost_micros": t.provider_cost_micros}
                        for t in spend.tenants],
        }


def _queue(q: admin_pb2.TenantQueue | admin_pb2.TierQueue, **names: str) -> dict[str, Any]:
    return {**names, "waiting": q.waiting, "in_flight": q.in_flight,
            "oldest_wait_seconds": round(q.oldest_wait_seconds, 1)}


def _pool(p: admin_pb2.PoolStatus) -> dict[str, Any]:
    return {
        "pool_id": p.pool_id, "provider": p.provider, "model": p.model, "capacity": p.capacity,
        "in_use": p.in_use, "utilisation": round(p.utilisation, 4),
        "state": "draining" if p.draining else "paused" if p.paused else "active",
        "circuit": p.circuit or "unknown",
    }
