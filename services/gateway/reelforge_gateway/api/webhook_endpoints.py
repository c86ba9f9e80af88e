"""/v1/webhook_endpoints, shaped like OpenAI's (the SDK's `client.webhooks`): create (the signing secret is
shown once), list (cursor pages), retrieve, update, delete, rotate_secret, test; plus the delivery log and
replay of this gateway's durable delivery. Deliveries are signed per Standard Webhooks, so both the
`standardwebhooks` package and the SDK's `client.webhooks.unwrap` verify them."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
import httpx
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from reelforge_gateway import endpoint_store, store, validation, webhooks
from reelforge_gateway.api import pages
from reelforge_gateway.api.auth import Caller, authenticate, require_scope
from reelforge_gateway.api.problems import OPENAI_ERRORS, Problem
from reelforge_gateway.api.videos import parse, read_body
from reelforge_gateway.secret_box import SecretBox, SecretUnreadable
from reelforge_gateway.settings import GatewaySettings

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"])
event_types_router = APIRouter(tags=["webhooks"])
AuthCaller = Annotated[Caller, Depends(authenticate)]
MAX_ENDPOINTS = 16
EventTypes = list[webhooks.EventType]


class CreateEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(min_length=8, max_length=2000, description="http(s) URL that passes the SSRF guard")
    name: str = Field(default="", max_length=200)
    event_types: EventTypes = Field(
        default_factory=lambda: list(webhooks.DEFAULT_EVENTS), min_length=1, max_length=len(webhooks.EVENT_TYPES),
        validation_alias=AliasChoices("event_types", "events"), description="`events` is accepted as an alias")

    @field_validator("url", "name")
    @classmethod
    def text(cls, value: str) -> str:
        return validation.check_text(value, "url and name")


class UpdateEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str | None = Field(default=None, min_length=8, max_length=2000)
    name: str | None = Field(default=None, max_length=200)
    event_types: EventTypes | None = Field(default=None, min_length=1, max_length=len(webhooks.EVENT_TYPES))

    @field_validator("url", "name")
    @classmethod
    def text(cls, value: str | None) -> str | None:
        return validation.check_text(value, "url and name") if value is not None else None


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    keep_old_secret_active_for_24_hours: bool = False


class TestEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    event_type: webhooks.EventType


class Endpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    name: str
    url: str
    event_types: list[str]
    created_at: int
    updated_at: int
    signing_secret_hint: str

    @classmethod
    def from_row(cls, row: asyncpg.Record, box: SecretBox) -> Endpoint:
        return cls(id=row["endpoint_id"], name=row["name"], url=row["url"], event_types=list(row["events"]),
                   created_at=int(row["created_at"].timestamp()), updated_at=int(row["updated_at"].timestamp()),
                   signing_secret_hint=_hint(row, box))


class EndpointWithSecret(Endpoint):
    signing_secret: str = Field(description="Shown only on creation and rotation")

    @classmethod
    def from_row(cls, row: asyncpg.Record, box: SecretBox) -> EndpointWithSecret:
        secret = box.open(row["secret"], row["endpoint_id"])
        return cls(**Endpoint.from_row(row, box).model_dump(), signing_secret=secret)


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Endpoint]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class TestResult(BaseModel):
    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    webhook_endpoint_id: str
    event_type: str
    status_code: int
    success: Literal[True] = True


class EventTypeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[str]


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

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Delivery:
        return cls(id=row["delivery_id"], **{k: row[k] for k in cls.model_fields if k != "id"})


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Delivery]


def _hint(row: asyncpg.Record, box: SecretBox) -> str:
    try:
        return f"whsec_...{box.open(row['secret'], row['endpoint_id'])[-4:]}"
    except SecretUnreadable:
        return "whsec_...????"  # sealed under a key no longer configured (the service log says which)


def _not_found(endpoint_id: str) -> Problem:
    return Problem(404, "webhook_endpoint_not_found", "No such webhook endpoint",
                   f"No webhook endpoint {endpoint_id[:64]!r} for this API key")


async def _check_url_allowed(request: Request, url: str) -> None:
    try:
        await webhooks.url_guard(request.app.state.settings.webhook_allowed_hosts).check(url)
    except webhooks.UrlForbidden as exc:
        raise Problem(400, "webhook_url_forbidden", "The webhook URL is not allowed", str(exc), param="url") from None


async def _owned(request: Request, caller: Caller, endpoint_id: str) -> asyncpg.Record:
    row = await endpoint_store.get(request.app.state.pool, caller.tenant_id, endpoint_id)
    if row is None:
        raise _not_found(endpoint_id)
    return row


@router.post("", response_model=EndpointWithSecret, responses=OPENAI_ERRORS)
async def create_endpoint(body: CreateEndpoint, request: Request, caller: AuthCaller) -> EndpointWithSecret:
    require_scope(caller, "jobs:write")
    return await create_for_tenant(request, caller.tenant_id, body)


async def create_for_tenant(request: Request, tenant_id: str, body: CreateEndpoint) -> EndpointWithSecret:
    """Checks the URL against the SSRF guard and stores the endpoint (also used by the admin API)."""
    await _check_url_allowed(request, body.url)
    box: SecretBox = request.app.state.secret_box
    row = await endpoint_store.create(request.app.state.pool, box, tenant_id, body.name, body.url,
                                      sorted(set(body.event_types)), webhooks.new_secret(), MAX_ENDPOINTS)
    if row is None:
        raise Problem(400, "too_many_webhook_endpoints", f"At most {MAX_ENDPOINTS} webhook endpoints per tenant")
    return EndpointWithSecret.from_row(row, box)


def endpoint_page(rows: list[asyncpg.Record], limit: int, box: SecretBox) -> EndpointList:
    """A page from `limit + 1` rows (the extra one only says there is more)."""
    data = [Endpoint.from_row(row, box) for row in rows[:limit]]
    return EndpointList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                        has_more=len(rows) > limit)


@router.get("", response_model=EndpointList, responses=OPENAI_ERRORS)
async def list_endpoints(
    request: Request, caller: AuthCaller,
    after: Annotated[str | None, Query(max_length=64, description="Id of the last endpoint of the previous page")]
    = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> EndpointList:
    """Newest first."""
    require_scope(caller, "jobs:read")
    pool = request.app.state.pool
    position = await pages.position_after(
        after, lambda endpoint_id: endpoint_store.position(pool, caller.tenant_id, endpoint_id), "webhook endpoint")
    return endpoint_page(await endpoint_store.page(pool, caller.tenant_id, limit + 1, position), limit,
                         request.app.state.secret_box)


@router.get("/{endpoint_id}", response_model=Endpoint, responses=OPENAI_ERRORS)
async def retrieve_endpoint(endpoint_id: str, request: Request, caller: AuthCaller) -> Endpoint:
    require_scope(caller, "jobs:read")
    return Endpoint.from_row(await _owned(request, caller, endpoint_id), request.app.state.secret_box)


@router.post("/{endpoint_id}", response_model=Endpoint, responses=OPENAI_ERRORS)
async def update_endpoint(endpoint_id: str, body: UpdateEndpoint, request: Request, caller: AuthCaller) -> Endpoint:
    """Changes the fields given; `event_types` replaces the whole set."""
    require_scope(caller, "jobs:write")
    if body.url is not None:
        await _check_url_allowed(request, body.url)
    events: list[str] | None = sorted(set(body.event_types)) if body.event_types is not None else None
    row = await endpoint_store.update(request.app.state.pool, caller.tenant_id, endpoint_id, body.name, body.url,
                                      events)
    if row is None:
        raise _not_found(endpoint_id)
    return Endpoint.from_row(row, request.app.state.secret_box)


@router.delete("/{endpoint_id}", response_model=DeletedEndpoint, responses=OPENAI_ERRORS)
async def delete_endpoint(endpoint_id: str, request: Request, caller: AuthCaller) -> DeletedEndpoint:
    require_scope(caller, "jobs:write")
    if not await endpoint_store.delete(request.app.state.pool, caller.tenant_id, endpoint_id):
        raise _not_found(endpoint_id)
    return DeletedEndpoint(id=endpoint_id)


@router.post("/{endpoint_id}/rotate_secret", response_model=EndpointWithSecret, responses=OPENAI_ERRORS)
async def rotate_secret(endpoint_id: str, request: Request, caller: AuthCaller,
                        body: RotateSecret | None = None) -> EndpointWithSecret:
    """A new signing secret. With `keep_old_secret_active_for_24_hours`, deliveries carry a second
    signature made with the old secret for 24 hours, so receivers can switch over without a gap."""
    require_scope(caller, "jobs:write")
    keep = body.keep_old_secret_active_for_24_hours if body is not None else False
    box: SecretBox = request.app.state.secret_box
    row = await endpoint_store.rotate_secret(request.app.state.pool, box, caller.tenant_id, endpoint_id,
                                             webhooks.new_secret(), keep)
    if row is None:
        raise _not_found(endpoint_id)
    return EndpointWithSecret.from_row(row, box)


@router.post("/{endpoint_id}/test", response_model=TestResult, responses=OPENAI_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": TestEvent.model_json_schema()}}}})
async def test_endpoint(endpoint_id: str, request: Request, caller: AuthCaller) -> TestResult:
    """Sends one signed sample event now (not queued, not retried) and reports the receiver's status."""
    require_scope(caller, "jobs:write")
    row = await _owned(request, caller, endpoint_id)  # before the body: a foreign id is a 404, whatever
    body = parse(TestEvent, (await read_body(request, file_field=""))[0])
    settings: GatewaySettings = request.app.state.settings
    payload = webhooks.sample_event(body.event_type)
    try:
        signing = webhooks.active_secrets(row, request.app.state.secret_box)
        guard = webhooks.url_guard(settings.webhook_allowed_hosts)
        async with webhooks.delivery_client(guard, settings.webhook_timeout_seconds) as client:
            status = await webhooks.send_once(client, row["url"], signing, f"msg_{secrets.token_hex(12)}", payload)
    except SecretUnreadable:
        raise Problem(503, "webhook_secret_unreadable", "The endpoint's signing secret cannot be read now",
                      "Its key is not configured on this gateway; rotate the secret or ask the operator") from None
    except webhooks.UrlForbidden as exc:
        raise Problem(400, "webhook_url_forbidden", "The webhook URL is not allowed", str(exc)) from None
    except httpx.HTTPError as exc:
        raise Problem(400, "webhook_endpoint_unreachable", "The webhook endpoint could not be reached",
                      f"{type(exc).__name__}: {exc}"[:300]) from None
    return TestResult(webhook_endpoint_id=row["endpoint_id"], event_type=body.event_type, status_code=status)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList, responses=OPENAI_ERRORS)
async def list_deliveries(endpoint_id: str, request: Request, caller: AuthCaller) -> DeliveryList:
    """The last 100 deliveries, newest first; `dead` ones gave up and can be replayed."""
    require_scope(caller, "jobs:read")
    rows = await store.list_webhook_deliveries(request.app.state.pool, caller.tenant_id, endpoint_id)
    if rows is None:
        raise _not_found(endpoint_id)
    return DeliveryList(data=[Delivery.from_row(r) for r in rows])


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay", status_code=202, response_model=Delivery,
             responses=OPENAI_ERRORS)
async def replay_delivery(endpoint_id: str, delivery_id: str, request: Request, caller: AuthCaller) -> Delivery:
    """Sends a delivery again (same webhook-id, so receivers can dedupe), with a fresh attempt budget."""
    require_scope(caller, "jobs:write")
    row = await store.replay_webhook_delivery(request.app.state.pool, caller.tenant_id, endpoint_id, delivery_id)
    if row is None:
        raise Problem(404, "webhook_delivery_not_found", "No such delivery")
    return Delivery.from_row(row)


@event_types_router.get("/v1/webhook_event_types", response_model=EventTypeList, responses=OPENAI_ERRORS)
async def list_event_types(caller: AuthCaller) -> EventTypeList:
    """The event types an endpoint may subscribe to (`job.progress`: every state change before the end)."""
    require_scope(caller, "jobs:read")
    return EventTypeList(data=list(webhooks.EVENT_TYPES))

