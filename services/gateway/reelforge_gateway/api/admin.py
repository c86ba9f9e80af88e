"""/v1/admin: tenants, their API keys and webhook endpoints, for keys with the `admin` scope.

Keys are shown once (on creation and rotation) and stored as a SHA-256 hash. Rotation issues a
successor and keeps the old key valid for a grace period; revocation takes effect at once on every
gateway instance (the key cache is cleared through a NOTIFY, see reelforge_gateway.key_changes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reelforge_gateway import endpoint_store, tenancy, validation
from reelforge_gateway.api.auth import Caller, KeyCache, authenticate, require_scope
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.api.webhook_endpoints import (
    CreateEndpoint,
    EndpointList,
    EndpointWithSecret,
    create_for_tenant,
    endpoint_page,
)

_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": text}
    for status, text in [(400, "Malformed JSON"), (401, "Missing or invalid API key"),
                         (403, "The key lacks the admin scope"), (404, "No such tenant or key"),
                         (409, "Conflict"), (422, "Invalid request"), (429, "Rate limited")]
}


async def admin_caller(request: Request) -> Caller:
    caller = await authenticate(request)
    require_scope(caller, "admin")
    return caller


AdminCaller = Annotated[Caller, Depends(admin_caller)]
router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=_ERRORS)

Limit = Annotated[int | None, Field(ge=0, le=10_000_000)]
Scope = Literal["jobs:read", "jobs:write", "admin"]
MAX_GRACE_SECONDS = 30 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _name(value: str) -> str:
    value = validation.check_text(value.strip(), "name")
    if not value or not value.isprintable():
        raise ValueError("name must be printable text")
    return value


class TenantCreate(_Strict):
    name: str = Field(min_length=1, max_length=100, description="Unique")
    rate_limit_per_minute: Limit = Field(default=None, description="Requests per minute for the whole tenant;"
                                         " null = the gateway default, 0 = no limit")
    max_concurrent_jobs: Limit = Field(default=None, description="Jobs accepted and not yet terminal")
    max_backlog_jobs: Limit = Field(default=None, description="Jobs queued, not yet admitted")

    @field_validator("name")
    @classmethod
    def name_is_text(cls, value: str) -> str:
        return _name(value)


class TenantUpdate(_Strict):
    """Only the fields sent change; null resets a limit to the gateway default."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    status: Literal["active", "suspended"] | None = Field(default=None, description="suspended: every key is refused")
    rate_limit_per_minute: Limit = None
    max_concurrent_jobs: Limit = None
    max_backlog_jobs: Limit = None

    @field_validator("name")
    @classmethod
    def name_is_text(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("name cannot be null")
        return _name(value)

    @field_validator("status")
    @classmethod
    def status_not_null(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("status cannot be null")
        return value


class Tenant(BaseModel):
    id: str
    object: Literal["tenant"] = "tenant"
    name: str
    status: str
    rate_limit_per_minute: int | None
    max_concurrent_jobs: int | None
    max_backlog_jobs: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Tenant:
        fields = {name: row[name] for name in cls.model_fields if name not in ("id", "object")}
        return cls(id=row["tenant_id"], **fields)


class TenantList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Tenant]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


def _default_scopes() -> list[Scope]:
    return ["jobs:read", "jobs:write"]


class KeyCreate(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    scopes: list[Scope] = Field(default_factory=_default_scopes, min_length=1, max_length=3)
    expires_at: datetime | None = Field(default=None, strict=False,
                                        description="ISO 8601 with a time zone, in the future")
    expires_in_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 24 * 3600,
                                           description="Alternative to expires_at")
    rate_limit_per_minute: Limit = Field(default=None, description="null = the gateway default, 0 = no limit")

    @field_validator("name")
    @classmethod
    def name_is_text(cls, value: str | None) -> str | None:
        return _name(value) if value is not None else None

    @model_validator(mode="after")
    def one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_seconds is not None:
            raise ValueError("give expires_at or expires_in_seconds, not both")
        if self.expires_at is not None:
            if self.expires_at.tzinfo is None:
                raise ValueError("expires_at needs a time zone")
            if self.expires_at <= datetime.now(UTC):
                raise ValueError("expires_at must be in the future")
        return self

    def expiry(self) -> datetime | None:
        if self.expires_in_seconds is not None:
            return datetime.now(UTC) + timedelta(seconds=self.expires_in_seconds)
        return self.expires_at


class KeyRotate(_Strict):
    grace_seconds: int = Field(default=24 * 3600, ge=0, le=MAX_GRACE_SECONDS,
                               description="How long the old key keeps working (0 = it stops now)")
    expires_in_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 24 * 3600,
                                           description="Expiry of the new key; none by default")


class ApiKey(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    tenant_id: str
    name: str | None
    prefix: str = Field(description="The key's public start, e.g. `rfk_0a1b2c3d4e`, to recognise it")
    scopes: list[str]
    rate_limit_per_minute: int | None
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from: str | None
    key: str | None = Field(default=None, description="The secret: shown once, on creation or rotation")

    @classmethod
    def from_row(cls, row: asyncpg.Record, secret: str | None = None) -> ApiKey:
        now = datetime.now(UTC)
        status: Literal["active", "expired", "revoked"] = "active"
        if row["revoked_at"] is not None:
            status = "revoked"
        elif row["expires_at"] is not None and row["expires_at"] <= now:
            status = "expired"
        return cls(id=row["key_id"], tenant_id=row["tenant_id"], name=row["name"], prefix=f"rfk_{row['prefix']}",
                   scopes=list(row["scopes"]), rate_limit_per_minute=row["rate_limit_per_minute"], status=status,
                   created_at=row["created_at"], expires_at=row["expires_at"], revoked_at=row["revoked_at"],
                   rotated_from=row["rotated_from"], key=secret)


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKey]


def _tenant_not_found(tenant_id: str) -> Problem:
    return Problem(404, "tenant_not_found", "No such tenant", f"No tenant {tenant_id[:64]!r}")


def _key_not_found(key_id: str) -> Problem:
    return Problem(404, "api_key_not_found", "No such API key", f"No key {key_id[:64]!r}")


def _name_taken(name: str) -> Problem:
    return Problem(409, "tenant_name_taken", "A tenant with this name exists", f"Pick another name than {name!r}",
                   param="name")


async def _tenant(request: Request, tenant_id: str) -> asyncpg.Record:
    row = await tenancy.get_tenant(request.app.state.pool, tenant_id) if len(tenant_id) <= 64 else None
    if row is None:
        raise _tenant_not_found(tenant_id)
    return row


@router.post("/tenants", status_code=201, response_model=Tenant)
async def create_tenant(body: TenantCreate, request: Request, _: AdminCaller) -> Tenant:
    try:
        row = await tenancy.create_tenant(request.app.state.pool, body.name, body.model_dump(exclude={"name"}))
    except tenancy.NameTaken:
        raise _name_taken(body.name) from None
    return Tenant.from_row(row)


@router.get("/tenants", response_model=TenantList)
async def list_tenants(
    request: Request, _: AdminCaller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64, description="`next_cursor` of the previous page")] = None,
) -> TenantList:
    """Oldest first."""
    pool = request.app.state.pool
    if cursor is not None and await tenancy.get_tenant(pool, cursor) is None:
        raise Problem(422, "invalid_cursor", "Invalid cursor", "Pass the next_cursor of a previous page",
                      param="cursor")
    rows = await tenancy.list_tenants(pool, limit + 1, cursor)
    page = [Tenant.from_row(row) for row in rows[:limit]]
    more = len(rows) > limit
    return TenantList(data=page, has_more=more, next_cursor=page[-1].id if more else None)


@router.get("/tenants/{tenant_id}", response_model=Tenant)
async def get_tenant(tenant_id: str, request: Request, _: AdminCaller) -> Tenant:
    return Tenant.from_row(await _tenant(request, tenant_id))


@router.patch("/tenants/{tenant_id}", response_model=Tenant)
async def update_tenant(tenant_id: str, body: TenantUpdate, request: Request, _: AdminCaller) -> Tenant:
    """Suspending a tenant or changing its limits applies to its keys at once."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    try:
        row = await tenancy.update_tenant(request.app.state.pool, tenant_id, changes) if len(tenant_id) <= 64 else None
    except tenancy.NameTaken:
        raise _name_taken(str(body.name)) from None
    if row is None:
        raise _tenant_not_found(tenant_id)
    _key_cache(request).clear()
    return Tenant.from_row(row)


@router.post("/tenants/{tenant_id}/keys", status_code=201, response_model=ApiKey)
async def create_key(tenant_id: str, body: KeyCreate, request: Request, _: AdminCaller) -> ApiKey:
    """The answer holds the key itself (`key`); it is not stored and cannot be shown again."""
    created = await tenancy.create_key(request.app.state.pool, tenant_id[:64], body.scopes, body.name,
                                       body.expiry(), body.rate_limit_per_minute)
    if created is None:
        raise _tenant_not_found(tenant_id)
    row, key = created
    return ApiKey.from_row(row, key.plaintext)


@router.get("/tenants/{tenant_id}/keys", response_model=ApiKeyList)
async def list_keys(tenant_id: str, request: Request, _: AdminCaller) -> ApiKeyList:
    await _tenant(request, tenant_id)
    rows = await tenancy.list_keys(request.app.state.pool, tenant_id)
    return ApiKeyList(data=[ApiKey.from_row(row) for row in rows])


@router.post("/keys/{key_id}/rotate", status_code=201, response_model=ApiKey)
async def rotate_key(key_id: str, request: Request, _: AdminCaller, body: KeyRotate | None = None) -> ApiKey:
    """A new key with the same tenant, scopes, name and limit (`rotated_from` names the old one); the old
    key keeps working for `grace_seconds` (default 24 h). A revoked or expired key cannot be rotated (409)."""
    body = body or KeyRotate()
    expires = (datetime.now(UTC) + timedelta(seconds=body.expires_in_seconds)
               if body.expires_in_seconds is not None else None)
    try:
        rotated = await tenancy.rotate_key(request.app.state.pool, key_id[:64], timedelta(seconds=body.grace_seconds),
                                           expires)
    except tenancy.KeyNotActive:
        raise Problem(409, "api_key_not_active", "The key is revoked or expired",
                      "Create a new key for the tenant instead") from None
    if rotated is None:
        raise _key_not_found(key_id)
    _key_cache(request).clear()
    _, new, key = rotated
    return ApiKey.from_row(new, key.plaintext)


@router.delete("/keys/{key_id}", response_model=ApiKey)
async def revoke_key(key_id: str, request: Request, _: AdminCaller) -> ApiKey:
    """Revokes the key at once, on every gateway instance. Revoking again changes nothing."""
    row = await tenancy.revoke_key(request.app.state.pool, key_id[:64])
    if row is None:
        raise _key_not_found(key_id)
    _key_cache(request).clear()
    return ApiKey.from_row(row)


@router.post("/tenants/{tenant_id}/webhook_endpoints", status_code=201, response_model=EndpointWithSecret)
async def create_webhook_endpoint(tenant_id: str, body: CreateEndpoint, request: Request,
                                  _: AdminCaller) -> EndpointWithSecret:
    """As POST /v1/webhook_endpoints for that tenant (same SSRF guard; the secret is shown once)."""
    await _tenant(request, tenant_id)
    return await create_for_tenant(request, tenant_id, body)


@router.get("/tenants/{tenant_id}/webhook_endpoints", response_model=EndpointList)
async def list_webhook_endpoints(tenant_id: str, request: Request, _: AdminCaller) -> EndpointList:
    await _tenant(request, tenant_id)
    return endpoint_page(await endpoint_store.page(request.app.state.pool, tenant_id, 101, None), 100,
                         request.app.state.secret_box)


@router.delete("/tenants/{tenant_id}/webhook_endpoints/{endpoint_id}", status_code=204)
async def delete_webhook_endpoint(tenant_id: str, endpoint_id: str, request: Request, _: AdminCaller) -> None:
    await _tenant(request, tenant_id)
    if not await endpoint_store.delete(request.app.state.pool, tenant_id, endpoint_id):
        raise Problem(404, "webhook_endpoint_not_found", "No such webhook endpoint")


def _key_cache(request: Request) -> KeyCache:
    cache: KeyCache = request.app.state.key_cache
    return cache
