"""/v1/webhook_endpoints: where a tenant wants job events delivered, signed per Standard Webhooks."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reelforge_gateway import store, validation, webhooks
from reelforge_gateway.api.auth import Caller, authenticate, require_scope
from reelforge_gateway.api.problems import Problem

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"])
AuthCaller = Annotated[Caller, Depends(authenticate)]
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": text}
    for status, text in [(400, "Malformed JSON"), (401, "Missing or invalid API key"), (403, "Scope"),
                         (404, "No such endpoint"), (422, "Invalid request"), (429, "Rate limited")]
}
MAX_ENDPOINTS = 16


class CreateEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(min_length=8, max_length=2000, description="http(s) URL that passes the SSRF guard")
    events: list[webhooks.EventType] = Field(default_factory=lambda: list(webhooks.DEFAULT_EVENTS),
                                             min_length=1, max_length=len(webhooks.EVENT_TYPES))

    @field_validator("url")
    @classmethod
    def text(cls, value: str) -> str:
        return validation.check_text(value, "url")


class Endpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str]
    created_at: datetime
    secret: str | None = Field(default=None, description="Shown once, on creation")

    @classmethod
    def from_row(cls, row: asyncpg.Record, with_secret: bool = False) -> Endpoint:
        return cls(id=row["endpoint_id"], url=row["url"], events=list(row["events"]), created_at=row["created_at"],
                   secret=row["secret"] if with_secret else None)


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Endpoint]


class Delivery(BaseModel):
    id: str
    event_type: str
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Delivery]


@router.post("", status_code=201, response_model=Endpoint, responses=_ERRORS)
async def create_endpoint(body: CreateEndpoint, request: Request, caller: AuthCaller) -> Endpoint:
    require_scope(caller, "jobs:write")
    return await create_for_tenant(request, caller.tenant_id, body)


async def create_for_tenant(request: Request, tenant_id: str, body: CreateEndpoint) -> Endpoint:
    """Checks the URL against the SSRF guard and stores the endpoint (also used by the admin API)."""
    allowed = frozenset(request.app.state.settings.webhook_allowed_hosts)
    try:
        await asyncio.to_thread(webhooks.check_url, body.url, allowed)
    except webhooks.UrlForbidden as exc:
        raise Problem(422, "webhook_url_forbidden", "The webhook URL is not allowed", str(exc), param="url") from None
    row = await store.create_webhook_endpoint(request.app.state.pool, tenant_id, body.url,
                                              sorted(set(body.events)), webhooks.new_secret(), MAX_ENDPOINTS)
    if row is None:
        raise Problem(422, "too_many_webhook_endpoints", f"At most {MAX_ENDPOINTS} endpoints per tenant")
    return Endpoint.from_row(row, with_secret=True)


@router.get("", response_model=EndpointList, responses=_ERRORS)
async def list_endpoints(request: Request, caller: AuthCaller) -> EndpointList:
    require_scope(caller, "jobs:read")
    rows = await store.list_webhook_endpoints(request.app.state.pool, caller.tenant_id)
    return EndpointList(data=[Endpoint.from_row(row) for row in rows])


@router.delete("/{endpoint_id}", status_code=204, responses=_ERRORS)
async def delete_endpoint(endpoint_id: str, request: Request, caller: AuthCaller) -> None:
    require_scope(caller, "jobs:write")
    if not await store.delete_webhook_endpoint(request.app.state.pool, caller.tenant_id, endpoint_id):
        raise Problem(404, "webhook_endpoint_not_found", "No such webhook endpoint")


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList, responses=_ERRORS)
async def list_deliveries(endpoint_id: str, request: Request, caller: AuthCaller) -> DeliveryList:
    """The last 100 deliveries, newest first; `dead` ones gave up and can be replayed."""
    require_scope(caller, "jobs:read")
    rows = await store.list_webhook_deliveries(request.app.state.pool, caller.tenant_id, endpoint_id)
    if rows is None:
        raise Problem(404, "webhook_endpoint_not_found", "No such webhook endpoint")
    return DeliveryList(data=[Delivery(id=r["delivery_id"], **{k: r[k] for k in Delivery.model_fields if k != "id"})
                              for r in rows])


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay", status_code=202, response_model=Delivery,
             responses=_ERRORS)
async def replay_delivery(endpoint_id: str, delivery_id: str, request: Request, caller: AuthCaller) -> Delivery:
    """Sends a delivery again (same webhook-id, so receivers can dedupe), with a fresh attempt budget."""
    require_scope(caller, "jobs:write")
    row = await store.replay_webhook_delivery(request.app.state.pool, caller.tenant_id, endpoint_id, delivery_id)
    if row is None:
        raise Problem(404, "webhook_delivery_not_found", "No such delivery")
    return Delivery(id=row["delivery_id"], **{k: row[k] for k in Delivery.model_fields if k != "id"})
