"""/v1/jobs: create (idempotent), list, read, cancel, follow (SSE) a job, download the finished video."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import State

from reelforge_core.listen import Listener
from reelforge_gateway import follow, store, templates, validation
from reelforge_gateway.api import idempotency, postprocess, qc, variants
from reelforge_gateway.api.auth import Caller, Gatekeeper, authenticate, moderate_text, owned_job, require_scope
from reelforge_gateway.api.postprocess import Postprocess
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.api.qc import QcSummary
from reelforge_gateway.group_commit import GroupCommit
from reelforge_gateway.job_reads import JobReader
from reelforge_gateway.signing import UrlSigner

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class CreateJob(BaseModel):
    # Strict: JSON types as documented (no "4" for 4, no false for 0).
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=validation.MAX_PROMPT_CHARS,
                        description="What the video shows")
    seconds: float = Field(ge=validation.MIN_SECONDS, le=validation.MAX_SECONDS, description="Duration")
    size: str = Field(default="1280x720", description=f"One of {', '.join(validation.SIZES)}")
    model: str = Field(default="animatic", description=f"One of {', '.join(validation.MODELS)}")
    narration: str | None = Field(default=None, max_length=validation.MAX_NARRATION_CHARS,
                                  description="Voice-over text; also becomes the subtitle track")
    voice: str = Field(default="en-us", description=f"Narration voice, one of {', '.join(validation.VOICES)}")
    seed: int | None = Field(default=None, ge=0, le=2**53, description="Same seed, same render")
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description=f"Partner metadata (e.g. your end customer's id): up to {validation.MAX_METADATA_KEYS} keys of"
        f" at most {validation.MAX_METADATA_KEY_CHARS} characters, values of at most"
        f" {validation.MAX_METADATA_VALUE_CHARS}; echoed on the job and filterable on list",
    )

    postprocess: Postprocess | None = Field(
        default=None, description="How to finish the video: voice-over segments, subtitles, music, loudness, "
        "renditions, thumbnails (the watermark follows the tenant's tier)")

    @field_validator("metadata")
    @classmethod
    def metadata_within_limits(cls, value: dict[str, str]) -> dict[str, str]:
        validation.check_metadata(value)
        return value

    @field_validator("prompt")
    @classmethod
    def prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain text")
        return validation.check_text(value.strip(), "prompt")

    @field_validator("narration")
    @classmethod
    def narration_is_text(cls, value: str | None) -> str | None:
        return validation.check_text(value, "narration") if value is not None else None

    @field_validator("size")
    @classmethod
    def known_size(cls, value: str) -> str:
        validation.parse_size(value)
        return value

    @field_validator("model")
    @classmethod
    def known_model(cls, value: str) -> str:
        if value not in validation.MODELS:
            raise ValueError(f"model must be one of {', '.join(validation.MODELS)}")
        return value

    @field_validator("voice")
    @classmethod
    def known_voice(cls, value: str) -> str:
        if value not in validation.VOICES:
            raise ValueError(f"voice must be one of {', '.join(validation.VOICES)}")
        return value


class JobRequest(BaseModel):
    """What POST /v1/jobs and each batch line accept: a job's fields (CreateJob), or a template to expand.

    Without `template` and with one variant, the other fields are exactly a CreateJob. With a template,
    its preset and rendered texts come first and the fields given here override them; each of
    `variants` jobs gets its own seed (and the template's next prompt variation, if it has some).
    """

    model_config = ConfigDict(extra="allow", strict=True, title="JobRequest")

    template: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="A built-in or own template's name (GET /v1/templates)")
    variables: dict[str, Any] = Field(default_factory=dict, description="Values of the template's variables")
    variants: int = Field(default=1, ge=1, le=templates.MAX_VARIANTS,
                          description="How many jobs to make (distinct seeds); several come back as a group")

    def job_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def is_plain(self) -> bool:
        return self.template is None and self.variants == 1 and not self.variables


def validate_job(fields: dict[str, Any]) -> CreateJob:
    """CreateJob from a field dict, failing the way FastAPI's body validation does (422 with fields)."""
    try:
        return CreateJob.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


def to_new_job(body: CreateJob, tenant_id: str, **extra: Any) -> store.NewJob:
    width, height = validation.parse_size(body.size)
    return store.NewJob(
        tenant_id=tenant_id, model=body.model, prompt=body.prompt, seconds=body.seconds,
        width=width, height=height, narration=(body.narration or "").strip() or None, voice=body.voice,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31), metadata=body.metadata, **extra,
    )


class TimelineEntry(BaseModel):
    status: str
    at: datetime
    progress: int | None = None
    error_code: str | None = None


class JobError(BaseModel):
    code: str
    message: str | None


class Cost(BaseModel):
    amount_micros: int
    currency: str


class JobView(BaseModel):
    id: str
    object: str = "job"
    status: str
    progress: int
    model: str
    prompt: str
    seconds: float
    size: str
    narration: str | None
    voice: str
    seed: int
    created_at: datetime
    updated_at: datetime
    timeline: list[TimelineEntry]
    error: JobError | None
    output_seconds: float | None
    cost: Cost | None
    content_url: str | None
    metadata: dict[str, str]
    requested_model: str | None
    batch_id: str | None
    cancel_requested_at: datetime | None
    completed_at: datetime | None
    template: str | None = None
    variant: int = 0
    qc: QcSummary | None = Field(default=None, description="Quality control of the latest finish, once made;"
                                    " the full report is at /v1/jobs/{id}/qc")

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> JobView:
        return cls(
            id=row["job_id"], status=row["state"], progress=row["progress"], model=row["model"],
            prompt=row["prompt"], seconds=row["seconds"], size=f"{row['width']}x{row['height']}",
            narration=row["narration"], voice=row["voice"], seed=row["seed"],
            created_at=row["created_at"], updated_at=row["updated_at"],
            timeline=[TimelineEntry(**entry) for entry in json.loads(row["timeline"])],
            error=JobError(code=row["error_code"], message=row["error_message"]) if row["error_code"] else None,
            output_seconds=row["output_seconds"],
            cost=Cost(amount_micros=row["cost_micros"], currency=row["currency"] or "USD")
            if row["cost_micros"] is not None else None,
            content_url=f"/v1/jobs/{row['job_id']}/content" if row["state"] == "completed" else None,
            metadata=json.loads(row["metadata"]), requested_model=row["requested_model"], batch_id=row["batch_id"],
            cancel_requested_at=row["cancel_requested_at"], completed_at=row["completed_at"],
            template=row["template"], variant=row["variant"],
        )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobView]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page")


AuthCaller = Annotated[Caller, Depends(authenticate)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job for this tenant",
          "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}},
}


_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


def _problem(description: str) -> dict[str, Any]:
    return {**_PROBLEM, "description": description}


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("Missing or invalid API key"), 403: _problem("The key lacks a scope"),
    422: _problem("Invalid request"), 429: _problem("Rate limited"),
}


@router.post("", status_code=202, response_model=JobView,
             responses={**_AUTH_ERRORS, 400: _problem("Malformed JSON or Idempotency-Key"),
                        413: _problem("Body too large"), 415: _problem("Unsupported media type")})
async def create_job(request_body: Annotated[JobRequest, Body()], request: Request, caller: AuthCaller) -> JSONResponse:
    """Accepts a job. With an `Idempotency-Key` header, a retry with the same body returns the original
    answer (same status, same job); the same key with a different body is a 422 `idempotency_key_reused`.

    A job may name a `template` with its `variables`; with `variants` above 1 the answer is a
    `job_group` (its `batch_id` follows them all, see /v1/batches) instead of a single job."""
    require_scope(caller, "jobs:write")
    if not request_body.is_plain():
        from reelforge_gateway.api import job_templates  # it builds on this module

        return await job_templates.create_from_request(request_body, request, caller)
    body = validate_job(request_body.job_fields())
    key = idempotency.from_request(request, fingerprint(body))
    submitted = await accept_job(request.app.state, caller, body, key)
    job_id = submitted.body["id"]
    trace.get_current_span().set_attribute("reelforge.job_id", job_id)
    headers = {"Location": f"/v1/jobs/{job_id}"}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)


def fingerprint(body: CreateJob) -> dict[str, Any]:
    """What an idempotency key is bound to, the same for REST and gRPC."""
    fields = body.model_dump(mode="json")
    if body.postprocess is None:  # requests without it hash as they did before the field existed
        del fields["postprocess"]
    return fields


def finishing(body: CreateJob, state: State) -> bytes:
    """The job's postprocess options, moderated, checked and serialized (b"" for none); raises Problem."""
    for text in postprocess.texts(body.postprocess):
        moderate_text(state.moderator, body.prompt, text)
    if body.postprocess is None:
        return b""
    return postprocess.check(body.postprocess, body.seconds, body.narration, body.voice,
                             state.content).SerializeToString()


async def accept_job(state: State, caller: Caller, body: CreateJob, key: store.Idempotency | None) -> store.Submitted:
    """Moderates, applies the tenant's job limits and stores the job (idempotently with a key): the one
    path by which REST and gRPC accept a native job. The answer is the job as REST renders it."""
    moderate_text(state.moderator, body.prompt, body.narration)
    job = to_new_job(body, caller.tenant_id, postprocess_options=finishing(body, state))
    gatekeeper: Gatekeeper = state.gatekeeper
    admit = gatekeeper.job_admission(caller)
    try:
        if admit is None:  # no per-tenant job limits to check in the transaction: share one (group commit)
            group: GroupCommit = state.group_commit
            return await group.submit(job, _render_job, 202, key)
        return await store.submit_job(state.pool, job, _render_job, 202, key, admit=admit)
    except store.IdempotencyKeyReused:
        assert key is not None
        raise idempotency.reused(key) from None


def _render_job(row: asyncpg.Record) -> dict[str, Any]:
    return JobView.from_row(row).model_dump(mode="json")


@router.get("", response_model=JobList, responses=_AUTH_ERRORS)
async def list_jobs(
    request: Request, caller: AuthCaller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
    status: Annotated[list[str] | None, Query(description="Repeat to match any of several states")] = None,
    created_after: Annotated[str | None, Query(description="Inclusive, ISO 8601",
                                               json_schema_extra={"format": "date-time"})] = None,
    created_before: Annotated[str | None, Query(description="Exclusive, ISO 8601",
                                                json_schema_extra={"format": "date-time"})] = None,
    batch_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    metadata: Annotated[list[str] | None, Query(description="`key=value`; repeat to require several")] = None,
) -> JobList:
    """Newest first. Filters combine with AND; `metadata=customer=42` matches jobs whose metadata has it."""
    require_scope(caller, "jobs:read")
    for state in status or []:
        if state not in validation.JOB_STATES:
            raise Problem(422, "invalid_request", "Unknown status",
                          f"status must be one of {', '.join(validation.JOB_STATES)}",
                          errors=[{"field": "status", "message": "unknown status", "type": "enum"}])
    wanted = _metadata_filter(metadata or [])
    where = store.JobFilter(status=status, created_after=_timestamp(created_after, "created_after"),
                            created_before=_timestamp(created_before, "created_before"),
                            metadata=wanted, batch_id=batch_id)
    return await page_of_jobs(request.app.state.pool, caller.tenant_id, limit, cursor, where)


async def page_of_jobs(pool: asyncpg.Pool, tenant_id: str, limit: int, cursor: str | None,
                       where: store.JobFilter) -> JobList:
    """Newest first, `limit` jobs after `cursor` (a next_cursor), for REST and gRPC."""
    rows = await store.list_jobs(pool, tenant_id, limit + 1, True, _decode_cursor(cursor) if cursor else None, where)
    page = rows[:limit]
    more = len(rows) > limit
    views = [JobView.from_row(row) for row in page]
    found = await qc.summaries(pool, tenant_id, [view.id for view in views])
    for view in views:
        view.qc = found.get(view.id)
    return JobList(data=views, has_more=more,
                   next_cursor=_encode_cursor(page[-1]) if more else None)


def _timestamp(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Problem(422, "invalid_request", "Invalid timestamp", f"{field} must be ISO 8601 with a time zone",
                      errors=[{"field": field, "message": "expected an ISO 8601 date-time", "type": "datetime"}])
    return parsed


def _metadata_filter(pairs: list[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    wanted: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise Problem(422, "invalid_request", "Invalid metadata filter", "Use metadata=key=value",
                          errors=[{"field": "metadata", "message": "expected key=value", "type": "value_error"}])
        wanted[name] = value
    try:
        validation.check_metadata(wanted)
    except ValueError as exc:
        raise Problem(422, "invalid_request", "Invalid metadata filter", str(exc),
                      errors=[{"field": "metadata", "message": str(exc), "type": "value_error"}]) from None
    return wanted


def _encode_cursor(row: asyncpg.Record, id_field: str = "job_id") -> str:
    raw = json.dumps([row["created_at"].isoformat(), row[id_field]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created_at), str(job_id)
    except (ValueError, TypeError, binascii.Error):
        raise Problem(422, "invalid_cursor", "Invalid cursor", "Pass the next_cursor of a previous page") from None


@router.get("/{job_id}", response_model=JobView, responses={**_AUTH_ERRORS, **_NOT_FOUND})
async def get_job(job_id: str, request: Request, caller: AuthCaller) -> JobView:
    return await read_job(request.app.state, caller, job_id)


async def read_job(state: State, caller: Caller, job_id: str) -> JobView:
    """The caller's tenant's job with its QC summary, in one (coalesced) query; 404 if not theirs."""
    return _view_with_qc(await _read_row(state, caller, job_id))


async def read_job_json(state: State, caller: Caller, job_id: str) -> bytes:
    """`read_job` as the JSON answer, rendered once per kept row (see job_reads.py)."""
    row = await _read_row(state, caller, job_id)
    reader: JobReader = state.job_reader
    return reader.cache.answer(job_id, row, lambda r: _view_with_qc(r).model_dump_json().encode())


async def _read_row(state: State, caller: Caller, job_id: str) -> asyncpg.Record:
    require_scope(caller, "jobs:read")
    reader: JobReader = state.job_reader
    row = await reader.get(caller.tenant_id, job_id) if len(job_id) <= 64 else None
    if row is None:
        raise _job_not_found(job_id)
    return row


def _view_with_qc(row: asyncpg.Record) -> JobView:
    view = JobView.from_row(row)
    if row["qc_summary"] is not None:
        view.qc = qc.summary_of(row["qc_render_id"], row["qc_checked_at"], row["qc_summary"])
    return view


@router.post("/{job_id}/cancel", status_code=202, response_model=JobView,
             responses={**_AUTH_ERRORS, **_NOT_FOUND, 409: _problem("The job already ended")})
async def cancel_job(job_id: str, request: Request, caller: AuthCaller) -> JobView:
    """Asks the orchestrator to cancel (jobs.v1.cancel-requested); the job shows `cancelled` once it has.
    Asking again is harmless; a job that already ended is a 409 `job_not_cancellable`."""
    require_scope(caller, "jobs:write")
    return JobView.from_row(await cancel(request.app.state.pool, caller, job_id))


async def cancel(pool: asyncpg.Pool, caller: Caller, job_id: str) -> asyncpg.Record:
    """Requests cancellation of the caller's job (REST and gRPC); 404 if not theirs, 409 if it ended."""
    row = await store.request_cancel(pool, caller.tenant_id, job_id[:64], "requested by partner")
    if row is None or len(job_id) > 64:
        raise _job_not_found(job_id)
    if row["state"] in store.TERMINAL_STATES:
        raise Problem(409, "job_not_cancellable", "The job already ended", f"The job is {row['state']}")
    return row


_KEEP_ALIVE_SECONDS = 15.0


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={**_AUTH_ERRORS, **_NOT_FOUND, 200: {"content": {"text/event-stream": {}},
                                                          "description": "Server-Sent Events"}})
async def job_events(job_id: str, request: Request, caller: AuthCaller) -> StreamingResponse:
    """Server-Sent Events: a `status` event for the job as it is, then one per transition (state or progress)
    in order, none merged or skipped (the job's timeline, as gRPC Watch sends it); `sequence` (and the event
    id) is the transition's place in the timeline. The stream ends after a terminal state (completed,
    failed, cancelled, expired); a comment line keeps a quiet stream alive."""
    first = await owned_job(request, caller, job_id, _job_not_found)
    feed: Listener = request.app.state.notifications
    transitions = follow.transitions(request.app.state.pool, feed, first,
                                     request.app.state.settings.stream_fallback_seconds)

    async def stream() -> AsyncIterator[bytes]:
        entries = follow.timeline(first)
        yield _status_event(first, len(entries) - 1, first["state"], first["progress"], first["updated_at"].isoformat())
        if first["state"] in store.TERMINAL_STATES:
            return
        # Woken by the NOTIFY of each change to the job (see reelforge_gateway.follow).
        upcoming: asyncio.Task[tuple[int, dict[str, Any], asyncpg.Record]] | None = None
        try:
            while True:
                upcoming = upcoming or asyncio.ensure_future(anext(transitions))
                done, _ = await asyncio.wait({upcoming}, timeout=_KEEP_ALIVE_SECONDS)
                if not done:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                try:
                    index, entry, row = upcoming.result()
                except StopAsyncIteration:  # ended (terminal, or the job was deleted)
                    return
                upcoming = None
                yield _status_event(row, index, entry["status"], entry.get("progress", 0), entry["at"])
        finally:
            if upcoming is not None:
                upcoming.cancel()
            await transitions.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _status_event(row: asyncpg.Record, sequence: int, status: str, progress: int, at: str) -> bytes:
    """One SSE `status` event; a terminal one carries the job's error, if it failed."""
    ended = status in store.TERMINAL_STATES
    data = {"id": row["job_id"], "status": status, "progress": progress, "sequence": sequence, "updated_at": at,
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if ended and row["error_code"] else None}
    return f"id: {sequence}\nevent: status\ndata: {json.dumps(data)}\n\n".encode()


@router.get("/{job_id}/content", response_class=FileResponse,
            responses={**_AUTH_ERRORS, **_NOT_FOUND, 409: _problem("Not completed"), 410: _problem("Gone"),
                       200: {"content": {"video/mp4": {}, "image/jpeg": {}}}})
async def get_content(job_id: str, request: Request, caller: AuthCaller,
                      variant: Annotated[variants.Variant, Query(description="thumbnail and spritesheet exist when"
                                                                 " the job's finish made them")] = "video",
                      ) -> FileResponse:
    row = await owned_job(request, caller, job_id, _job_not_found)
    if row["state"] != "completed" or not row["output_uri"]:
        raise Problem(409, "job_not_completed", "The video is not ready", f"The job is {row['state']}")
    return await variants.file_response(request.app.state.content, row, variant, 410)


class DownloadUrl(BaseModel):
    url: str = Field(description="Works without the API key until expires_at")
    expires_at: datetime
    variant: Literal["video"]


@router.get("/{job_id}/download_url", response_model=DownloadUrl,
            responses={**_AUTH_ERRORS, **_NOT_FOUND, 409: _problem("Not completed")})
async def download_url(job_id: str, request: Request, caller: AuthCaller) -> DownloadUrl:
    """A short-lived signed link to the finished video, for a browser or a CDN that holds no key."""
    row = await owned_job(request, caller, job_id, _job_not_found)
    if row["state"] != "completed" or not row["output_uri"]:
        raise Problem(409, "job_not_completed", "The video is not ready", f"The job is {row['state']}")
    url, expires = signed_video_url(request, row["job_id"])
    return DownloadUrl(url=url, expires_at=datetime.fromtimestamp(expires, UTC), variant="video")


def signed_video_url(request: Request, job_id: str) -> tuple[str, int]:
    """A link to the finished video that works without the API key, and when it stops working."""
    signer: UrlSigner = request.app.state.signer
    expires, signature = signer.sign(job_id, "video")
    query = urlencode({"variant": "video", "expires": expires, "signature": signature})
    return f"{request.url_for('signed_download', job_id=job_id)}?{query}", expires


def _job_not_found(job_id: str) -> Problem:
    return Problem(404, "job_not_found", "No such job", f"No job {job_id[:64]!r} for this API key's tenant")
