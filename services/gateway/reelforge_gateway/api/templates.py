"""/v1/templates: the built-in prompt templates and a tenant's own (create, list, read, update, delete)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reelforge_gateway import batches, templates
from reelforge_gateway.api.auth import Caller, authenticate, require_scope
from reelforge_gateway.api.job_templates import JobGroup, field_errors, find_template
from reelforge_gateway.api.jobs import CreateJob, validate_job
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.settings import GatewaySettings
from reelforge_gateway.templates import Template, TemplateBody, Variable

router = APIRouter(prefix="/v1/templates", tags=["templates"])
AuthCaller = Annotated[Caller, Depends(authenticate)]
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": text}
    for status, text in [(400, "Malformed JSON"), (401, "Missing or invalid API key"), (403, "Scope"),
                         (404, "No such template"), (422, "Invalid request"), (429, "Rate limited")]
}
_WRITE_ERRORS = {**_ERRORS, 409: {**_PROBLEM, "description": "Name taken, or a built-in template"}}


class CreateTemplate(TemplateBody):
    name: str = Field(pattern=templates.NAME_PATTERN, description="Lowercase letters, digits, - and _")


class UpdateTemplate(BaseModel):
    """Fields to replace; the others keep their value."""

    model_config = ConfigDict(extra="forbid", strict=True)
    description: str | None = None
    prompt: str | None = None
    narration: str | None = None
    variables: list[Variable] | None = None
    preset: dict[str, Any] | None = None
    variations: list[str] | None = None


class TemplateView(TemplateBody):
    model_config = ConfigDict(extra="forbid", title="Template")
    name: str
    object: Literal["template"] = "template"
    builtin: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, template: Template, row: asyncpg.Record | None = None) -> TemplateView:
        return cls(name=template.name, builtin=template.builtin, created_at=row["created_at"] if row else None,
                   updated_at=row["updated_at"] if row else None, **template.body.model_dump())


class TemplateList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TemplateView]


class TemplateDeleted(BaseModel):
    name: str
    object: Literal["template.deleted"] = "template.deleted"
    deleted: bool = True


def _check_preset(body: TemplateBody) -> None:
    """A preset holds job fields: it must make a valid job with any prompt (and seconds, if it has none)."""
    try:
        validate_job({"prompt": "preset check", "seconds": 4.0, **body.preset})
    except RequestValidationError as exc:
        errors = [{**error, "field": f"preset.{error['field']}" if error["field"] else "preset"}
                  for error in field_errors(exc)]
        raise Problem(422, "invalid_request", "The preset is not a valid set of job fields", errors=errors) from None


def _not_found(name: str) -> Problem:
    return Problem(404, "template_not_found", "No such template", f"No template {name[:64]!r} for this tenant")


def _read_only(name: str) -> Problem:
    return Problem(409, "template_read_only", "Built-in templates cannot be changed",
                   f"Create your own (POST /v1/templates) from {name!r} under another name")


@router.get("", response_model=TemplateList, responses=_ERRORS)
async def list_templates(request: Request, caller: AuthCaller) -> TemplateList:
    """The built-in templates, then the tenant's own, by name."""
    require_scope(caller, "jobs:read")
    own = await batches.list_templates(request.app.state.pool, caller.tenant_id)
    return TemplateList(data=[*(TemplateView.of(template) for template in templates.BUILTINS.values()),
                              *(TemplateView.of(template, row) for template, row in own)])


@router.get("/{name}", response_model=TemplateView, responses=_ERRORS)
async def get_template(name: str, request: Request, caller: AuthCaller) -> TemplateView:
    require_scope(caller, "jobs:read")
    if name in templates.BUILTINS:
        return TemplateView.of(templates.BUILTINS[name])
    found = await batches.get_template(request.app.state.pool, caller.tenant_id, name)
    if found is None:
        raise _not_found(name)
    return TemplateView.of(*found)


@router.post("", status_code=201, response_model=TemplateView, responses=_WRITE_ERRORS)
async def create_template(body: CreateTemplate, request: Request, caller: AuthCaller) -> TemplateView:
    """A template of the tenant's own; jobs name it in `template`. Names of built-ins are taken."""
    require_scope(caller, "jobs:write")
    settings: GatewaySettings = request.app.state.settings
    definition = TemplateBody.model_validate(body.model_dump(exclude={"name"}))
    _check_preset(definition)
    pool: asyncpg.Pool = request.app.state.pool
    taken = Problem(409, "template_exists", "A template of that name exists", f"{body.name!r} is taken")
    if body.name in templates.BUILTINS:
        raise taken
    row = await batches.create_template(pool, caller.tenant_id, body.name, definition,
                                        settings.max_templates_per_tenant)
    if row is None:
        if await batches.count_templates(pool, caller.tenant_id) >= settings.max_templates_per_tenant:
            raise Problem(422, "too_many_templates", "Template limit reached",
                          f"A tenant may have {settings.max_templates_per_tenant} templates; delete one first")
        raise taken
    return TemplateView.of(Template(body.name, definition, builtin=False), row)


@router.patch("/{name}", response_model=TemplateView, responses=_WRITE_ERRORS)
async def update_template(name: str, body: UpdateTemplate, request: Request, caller: AuthCaller) -> TemplateView:
    """Replaces the fields given; the result must still be a valid template. Running jobs keep what they got."""
    require_scope(caller, "jobs:write")
    if name in templates.BUILTINS:
        raise _read_only(name)
    pool: asyncpg.Pool = request.app.state.pool
    current = await find_template(pool, caller.tenant_id, name)
    if current is None:
        raise _not_found(name)
    merged = {**current.body.model_dump(), **body.model_dump(exclude_unset=True)}
    try:
        definition = TemplateBody.model_validate(merged)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    _check_preset(definition)
    row = await batches.update_template(pool, caller.tenant_id, name, definition)
    if row is None:
        raise _not_found(name)
    return TemplateView.of(Template(name, definition, builtin=False), row)


@router.delete("/{name}", response_model=TemplateDeleted, responses=_WRITE_ERRORS)
async def delete_template(name: str, request: Request, caller: AuthCaller) -> TemplateDeleted:
    """Jobs made from it keep its name in `template`; new jobs naming it are refused."""
    require_scope(caller, "jobs:write")
    if name in templates.BUILTINS:
        raise _read_only(name)
    if not await batches.delete_template(request.app.state.pool, caller.tenant_id, name):
        raise _not_found(name)
    return TemplateDeleted(name=name)


def document(schema: dict[str, Any]) -> None:
    """POST /v1/jobs takes a JobRequest: CreateJob's fields plus the template fields (FastAPI sees only the
    latter, the former being `extra`); spell them all out so clients and schema-driven tools see them."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "JobRequest" not in components:
        return
    job = CreateJob.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in job.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("CreateJob", job)  # the plain job (a JobRequest without template fields)
    request = components["JobRequest"]
    request["properties"] = {**job["properties"], **request.get("properties", {})}
    request["additionalProperties"] = False
    request["anyOf"] = [{"required": job.get("required", [])}, {"required": ["template"]}]
    request["description"] = (request.get("description") or "") + " `prompt` and `seconds` are required" \
        " unless a template provides them."
    group = JobGroup.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in group.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("JobGroup", group)
    created = schema["paths"]["/v1/jobs"]["post"]["responses"]["202"]["content"]["application/json"]
    created["schema"] = {"anyOf": [created["schema"], {"$ref": "#/components/schemas/JobGroup"}]}
