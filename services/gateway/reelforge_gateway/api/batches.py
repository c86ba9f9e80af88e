"""/v1/batches: submit up to 10,000 jobs as JSON lines, follow their progress, cancel, read the results.

All or nothing: one invalid line rejects the whole upload (422 `batch_invalid`, every bad line listed
by number), so a partner fixes the file and sends it again instead of reconciling a half-accepted
catalogue. An accepted batch is durable at once: its row, every job and every event in one transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from reelforge_gateway import batches, jsonl, store, templates
from reelforge_gateway.api import idempotency
from reelforge_gateway.api.auth import Caller, Gatekeeper, authenticate, require_scope
from reelforge_gateway.api.job_templates import JobRejected, expand, field_errors, new_jobs
from reelforge_gateway.api.jobs import JobRequest, _decode_cursor, _encode_cursor, signed_video_url
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.settings import GatewaySettings

router = APIRouter(prefix="/v1/batches", tags=["batches"])
AuthCaller = Annotated[Caller, Depends(authenticate)]
JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines", "application/json-lines")
MAX_LISTED_ERRORS = 1000
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


def _problem(description: str) -> dict[str, Any]:
    return {**_PROBLEM, "description": description}


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("Missing or invalid API key"), 403: _problem("The key lacks a scope"),
    404: _problem("No such batch for this tenant"), 422: _problem("Invalid request"), 429: _problem("Rate limited"),
}

BatchStatus = Literal["in_progress", "cancelling", "completed", "cancelled"]


class BatchView(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    kind: Literal["upload", "variants"] = Field(description="A JSON-lines upload, or one request's variants")
    status: BatchStatus = Field(description="completed (or cancelled) once every job has ended")
    line_count: int
    total_jobs: int
    counts: dict[str, int] = Field(description="Jobs by status")
    progress: int = Field(description="Percent, 0-100; an ended job counts as 100")
    created_at: datetime
    cancel_requested_at: datetime | None
    completed_at: datetime | None
    results_url: str

    @classmethod
    def from_row(cls, row: asyncpg.Record, progress: batches.Progress) -> BatchView:
        status: BatchStatus
        if row["completed_at"] is not None:
            status = "cancelled" if row["cancel_requested_at"] else "completed"
        else:
            status = "cancelling" if row["cancel_requested_at"] else "in_progress"
        return cls(id=row["batch_id"], kind=row["kind"], status=status, line_count=row["line_count"],
                   total_jobs=row["job_count"], counts=progress.counts, progress=progress.percent,
                   created_at=row["created_at"], cancel_requested_at=row["cancel_requested_at"],
                   completed_at=row["completed_at"], results_url=f"/v1/batches/{row['batch_id']}/results")


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchView]
    has_more: bool
    next_cursor: str | None


class ResultLine(BaseModel):
    """One line of GET /v1/batches/{id}/results (JSON lines, upload order)."""

    line: int | None
    variant: int
    job_id: str
    status: str
    error_code: str | None
    error_message: str | None
    download_url: str | None = Field(description="Signed, short-lived; only for completed jobs")


_UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    **{media: {"schema": {"type": "string", "description": "One job body (as POST /v1/jobs takes) per line"}}
       for media in JSONL_TYPES[:2]},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "A JSON-lines file"}}}},
}}}


@router.post("", status_code=202, response_model=BatchView, openapi_extra=_UPLOAD_BODY,
             responses={**_ERRORS, 400: _problem("Not UTF-8, malformed multipart, bad Idempotency-Key"),
                        413: _problem("Upload too large"), 415: _problem("Unsupported media type")})
async def create_batch(request: Request, caller: AuthCaller) -> JSONResponse:
    """Accepts a JSON-lines upload: each line a job body as POST /v1/jobs takes it (templates and variants
    included). Any invalid line rejects the whole batch with 422 `batch_invalid`, listing every bad line
    (`errors[].line`). With an `Idempotency-Key`, a retry of the same upload returns the original batch."""
    require_scope(caller, "jobs:write")
    settings: GatewaySettings = request.app.state.settings
    pool: asyncpg.Pool = request.app.state.pool
    data = await _upload(request)
    try:
        lines, syntax_errors = jsonl.parse(data, settings.batch_max_lines)
    except jsonl.NotUtf8 as exc:
        raise Problem(400, "invalid_jsonl", "The upload is not UTF-8 text", str(exc)) from None
    except jsonl.TooManyLines as exc:
        raise Problem(422, "batch_too_large", "Too many lines", str(exc)) from None
    if not lines and not syntax_errors:
        raise Problem(422, "batch_empty", "The batch has no lines", "Send one JSON job body per line")
    errors: list[dict[str, Any]] = [{"line": e.line, "code": e.code, "message": e.message} for e in syntax_errors]
    jobs: list[store.NewJob] = []
    batch_id = store.new_id("batch")
    found = await _templates_named(pool, caller.tenant_id, lines)
    for line in lines:
        try:
            request_line = _job_request(line.value)
            template = found.get(request_line.template) if request_line.template else None
            jobs += new_jobs(expand(request_line, template, request.app.state.moderator), request.app.state,
                             caller.tenant_id, batch_id, line.number)
        except JobRejected as exc:
            errors.append({"line": line.number, "code": exc.code, "message": exc.title, "errors": exc.errors})
    if errors:
        errors.sort(key=lambda error: int(error["line"]))
        raise Problem(422, "batch_invalid", "Some lines are not valid jobs; nothing was accepted",
                      f"{len(errors)} invalid line(s) of {len(lines) + len(syntax_errors)}",
                      errors=errors[:MAX_LISTED_ERRORS], error_count=len(errors))
    if len(jobs) > settings.batch_max_jobs:
        raise Problem(422, "batch_too_large", "Too many jobs",
                      f"The lines expand to {len(jobs)} jobs (variants included);"
                      f" the limit is {settings.batch_max_jobs}")
    key = idempotency.from_request(request, [line.value for line in lines])
    batch = batches.NewBatch(batch_id, caller.tenant_id, "upload", line_count=len(lines))

    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    admit = gatekeeper.job_admission(caller)  # the tenant's job limits, as for one job

    async def write(conn: asyncpg.Connection) -> tuple[dict[str, Any], str | None]:
        if admit is not None:
            await admit(conn)
        row = await batches.insert_batch(conn, batch, jobs)
        queued = batches.Progress({"queued": len(jobs)}, 0)
        return BatchView.from_row(row, queued).model_dump(mode="json"), None

    try:
        submitted = await store.idempotent_write(pool, caller.tenant_id, key, 202, write)
    except store.IdempotencyKeyReused:
        assert key is not None
        raise idempotency.reused(key) from None
    headers = {"Location": f"/v1/batches/{submitted.body['id']}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(submitted.body, status_code=202, headers=headers)


async def _upload(request: Request) -> bytes:
    """The JSON-lines bytes: the body itself, or the `file` part of a multipart form."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in JSONL_TYPES:
        return await request.body()
    if media_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)  # a malformed form is a 400 problem
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Problem(422, "invalid_request", "A `file` part is required", "Send the JSON lines as the `file` part",
                          errors=[{"field": "file", "message": "Field required", "type": "missing"}])
        return await upload.read()
    raise Problem(415, "unsupported_media_type", "Send JSON lines",
                  f"Use Content-Type {' or '.join(JSONL_TYPES[:2])}, or multipart/form-data with a `file` part")


def _job_request(value: dict[str, Any]) -> JobRequest:
    try:
        return JobRequest.model_validate(value)
    except ValidationError as exc:
        raise JobRejected("invalid_request", "The job has invalid fields", field_errors(exc)) from None


async def _templates_named(pool: asyncpg.Pool, tenant_id: str,
                           lines: list[jsonl.Line]) -> dict[str, templates.Template]:
    """Every template the lines name that exists (built-in or the tenant's), in one query."""
    names = {line.value["template"] for line in lines if isinstance(line.value.get("template"), str)}
    found = {name: templates.BUILTINS[name] for name in names if name in templates.BUILTINS}
    own = [name for name in names if name not in found]
    if own:
        for template, _row in await batches.list_templates(pool, tenant_id, own):
            found[template.name] = template
    return found


@router.get("", response_model=BatchList, responses=_ERRORS)
async def list_batches(
    request: Request, caller: AuthCaller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
) -> BatchList:
    """Newest first, with progress."""
    require_scope(caller, "jobs:read")
    pool: asyncpg.Pool = request.app.state.pool
    rows = await batches.list_batches(pool, caller.tenant_id, limit + 1, _decode_cursor(cursor) if cursor else None)
    page = rows[:limit]
    more = len(rows) > limit
    progress = await batches.progress(pool, caller.tenant_id, [row["batch_id"] for row in page])
    return BatchList(data=[BatchView.from_row(row, progress[row["batch_id"]]) for row in page], has_more=more,
                     next_cursor=_encode_cursor(page[-1], "batch_id") if more else None)


async def _owned_batch(request: Request, caller: Caller, batch_id: str) -> asyncpg.Record:
    row = await batches.get_batch(request.app.state.pool, caller.tenant_id, batch_id)
    if row is None:
        raise Problem(404, "batch_not_found", "No such batch", f"No batch {batch_id[:64]!r} for this API key's tenant")
    return row


async def _view(request: Request, caller: Caller, row: asyncpg.Record) -> BatchView:
    progress = await batches.progress(request.app.state.pool, caller.tenant_id, [row["batch_id"]])
    return BatchView.from_row(row, progress[row["batch_id"]])


@router.get("/{batch_id}", response_model=BatchView, responses=_ERRORS)
async def get_batch(batch_id: str, request: Request, caller: AuthCaller) -> BatchView:
    require_scope(caller, "jobs:read")
    return await _view(request, caller, await _owned_batch(request, caller, batch_id))


@router.post("/{batch_id}/cancel", status_code=202, response_model=BatchView,
             responses={**_ERRORS, 409: _problem("Every job of the batch already ended")})
async def cancel_batch(batch_id: str, request: Request, caller: AuthCaller) -> BatchView:
    """Asks to cancel every job of the batch that has not ended (jobs.v1.cancel-requested, once per job);
    they show `cancelled` as the orchestrator stops them. Asking again is harmless."""
    require_scope(caller, "jobs:write")
    row = await _owned_batch(request, caller, batch_id)
    if row["completed_at"] is not None:
        raise Problem(409, "batch_not_cancellable", "Every job of the batch already ended")
    cancelled = await batches.cancel_batch(request.app.state.pool, caller.tenant_id, row["batch_id"],
                                           "batch cancelled by partner")
    assert cancelled is not None
    return await _view(request, caller, cancelled)


@router.get("/{batch_id}/results", response_class=StreamingResponse,
            responses={**_ERRORS, 200: {"description": "JSON lines, one ResultLine per job in upload order",
                                        "content": {"application/jsonl": {"schema": {
                                            "$ref": "#/components/schemas/ResultLine"}}}}})
async def batch_results(batch_id: str, request: Request, caller: AuthCaller) -> StreamingResponse:
    """The results manifest: per job its line, variant, id, status, error and (when completed) a signed
    download URL that works without the API key for a few minutes. Read it again for fresh URLs."""
    require_scope(caller, "jobs:read")
    row = await _owned_batch(request, caller, batch_id)
    jobs = await batches.batch_jobs(request.app.state.pool, caller.tenant_id, row["batch_id"])

    async def lines() -> AsyncIterator[bytes]:
        chunk: list[str] = []
        for job in jobs:
            completed = job["state"] == "completed" and job["output_uri"]
            result = ResultLine(
                line=job["batch_line"], variant=job["variant"], job_id=job["job_id"], status=job["state"],
                error_code=job["error_code"], error_message=job["error_message"],
                download_url=signed_video_url(request, job["job_id"])[0] if completed else None)
            chunk.append(result.model_dump_json())
            if len(chunk) >= 500:
                yield ("\n".join(chunk) + "\n").encode()
                chunk = []
        if chunk:
            yield ("\n".join(chunk) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/jsonl",
                             headers={"Content-Disposition": f'attachment; filename="{row["batch_id"]}.jsonl"'})


def document(schema: dict[str, Any]) -> None:
    """OpenAPI additions: the result line's schema (the route streams it, so FastAPI cannot see it)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["ResultLine"] = ResultLine.model_json_schema()
