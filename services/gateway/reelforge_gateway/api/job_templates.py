"""From a job request (POST /v1/jobs or a batch line) to the jobs it stands for: template, variants, checks.

One path for both edges, so a batch line is accepted exactly when the same body would be by
POST /v1/jobs. Errors come back as `JobRejected` (a code and field errors) for the edge to report.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import State

from reelforge_gateway import batches, store, templates
from reelforge_gateway.api import idempotency
from reelforge_gateway.api.auth import Caller, Gatekeeper
from reelforge_gateway.api.jobs import CreateJob, JobRequest, JobView, finishing, to_new_job, validate_job
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.moderation import Moderator

_SEED_SPACE = 2**53


class JobRejected(Exception):
    """Why a job request cannot be accepted: a stable code, a title, and field errors."""

    def __init__(self, code: str, title: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(title)
        self.code, self.title, self.errors = code, title, errors

    def problem(self) -> Problem:
        return Problem(422, self.code, self.title, "; ".join(f"{e['field'] or 'body'}: {e['message']}"
                                                               for e in self.errors) or None, errors=self.errors)


def field_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    return [{"field": ".".join(str(part) for part in error.get("loc", ()) if part != "body") or None,
             "message": error.get("msg", "invalid"), "type": error.get("type")} for error in exc.errors()]


@dataclass(frozen=True)
class ExpandedJob:
    spec: CreateJob
    template: str | None
    variant: int


async def find_template(pool: asyncpg.Pool, tenant_id: str, name: str) -> templates.Template | None:
    """A built-in, or the tenant's own of that name (the built-ins' names are reserved)."""
    if name in templates.BUILTINS:
        return templates.BUILTINS[name]
    found = await batches.get_template(pool, tenant_id, name)
    return found[0] if found else None


def expand(job: JobRequest, template: templates.Template | None, moderator: Moderator) -> list[ExpandedJob]:
    """The validated jobs of one request: the template rendered under the explicit fields, one per variant."""
    if job.template is not None and template is None:
        raise JobRejected("template_not_found", "No such template", [
            {"field": "template", "message": f"no template {job.template!r} (see GET /v1/templates)",
             "type": "template_not_found"}])
    if template is None and job.variables:
        raise JobRejected("invalid_request", "variables need a template", [
            {"field": "variables", "message": "variables are only used with a template", "type": "value_error"}])
    overrides = job.job_fields()
    expanded = []
    base_seed: int | None = None
    for variant in range(job.variants):
        try:
            fields = (templates.render_job(template, job.variables, overrides, variant, job.variants)
                      if template else dict(overrides))
        except templates.TemplateVariablesInvalid as exc:
            raise JobRejected("invalid_template_variables", "The template's variables are not valid",
                              [error.as_dict() for error in exc.errors]) from None
        if job.variants > 1:
            if base_seed is None:
                given = fields.get("seed")
                base_seed = given if isinstance(given, int) and not isinstance(given, bool) else secrets.randbelow(
                    2**31)
            fields["seed"] = (base_seed + variant) % _SEED_SPACE
        try:
            spec = validate_job(fields)
        except RequestValidationError as exc:
            raise JobRejected("invalid_request", "The job has invalid fields", field_errors(exc)) from None
        term = moderator.blocked_term(spec.prompt, spec.narration)
        if term is not None:
            raise JobRejected("prompt_blocked", "The prompt was blocked by moderation", [
                {"field": "prompt", "message": f"it contains the blocked term {term!r}", "type": "prompt_blocked"}])
        expanded.append(ExpandedJob(spec, template.name if template else None, variant))
    return expanded


def new_jobs(expanded: list[ExpandedJob], state: State, tenant_id: str, batch_id: str | None = None,
             batch_line: int | None = None) -> list[store.NewJob]:
    """The jobs to store; the postprocess options' own checks fail as a JobRejected with their code."""
    try:
        return [to_new_job(job.spec, tenant_id, template=job.template, variant=job.variant, batch_id=batch_id,
                           batch_line=batch_line, postprocess_options=finishing(job.spec, state)) for job in expanded]
    except Problem as problem:
        raise JobRejected(problem.code, problem.title, problem.extra.get("errors") or [
            {"field": problem.extra.get("param") or "postprocess", "message": problem.detail or problem.title,
             "type": problem.code}]) from None


class JobGroup(BaseModel):
    """The jobs of one multi-variant request; follow them together at /v1/batches/{batch_id}."""

    object: Literal["job_group"] = "job_group"
    batch_id: str
    template: str | None
    data: list[JobView]


async def create_from_request(body: JobRequest, request: Request, caller: Caller) -> JSONResponse:
    """POST /v1/jobs with a template or several variants (the plain case stays in jobs.create_job)."""
    pool: asyncpg.Pool = request.app.state.pool
    template = await find_template(pool, caller.tenant_id, body.template) if body.template else None
    try:
        expanded = expand(body, template, request.app.state.moderator)
    except JobRejected as exc:
        raise exc.problem() from None
    key = idempotency.from_request(request, body.model_dump(mode="json"))
    batch_id = store.new_id("batch") if len(expanded) > 1 else None
    try:
        jobs = new_jobs(expanded, request.app.state, caller.tenant_id, batch_id)
    except JobRejected as exc:
        raise exc.problem() from None
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    admit = gatekeeper.job_admission(caller)
    try:
        if len(jobs) == 1:
            submitted = await store.submit_job(pool, jobs[0], lambda row: JobView.from_row(row).model_dump(mode="json"),
                                               202, key, admit=admit)
            location = f"/v1/jobs/{submitted.body['id']}"
        else:
            assert batch_id is not None
            batch = batches.NewBatch(batch_id, caller.tenant_id, "variants", line_count=1)

            async def write(conn: asyncpg.Connection) -> tuple[dict[str, Any], str | None]:
                if admit is not None:
                    await admit(conn)
                await batches.insert_batch(conn, batch, jobs)
                rows = await batches.batch_jobs(conn, caller.tenant_id, batch.batch_id)
                group = JobGroup(batch_id=batch.batch_id, template=body.template,
                                 data=[JobView.from_row(row) for row in rows])
                return group.model_dump(mode="json"), None

            submitted = await store.idempotent_write(pool, caller.tenant_id, key, 202, write)
            location = f"/v1/batches/{submitted.body['batch_id']}"
    except store.IdempotencyKeyReused:
        assert key is not None
        raise idempotency.reused(key) from None
    headers = {"Location": location}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)
