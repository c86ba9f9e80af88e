"""/v1/jobs: create a job, read its status and timeline, download the finished video."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reelforge_core.content import ContentNotFound, ContentStore
from reelforge_gateway import store, validation
from reelforge_gateway.api.auth import Caller, authenticate, require_scope
from reelforge_gateway.api.problems import Problem

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=validation.MAX_PROMPT_CHARS,
                        description="What the video shows")
    seconds: float = Field(ge=validation.MIN_SECONDS, le=validation.MAX_SECONDS, description="Duration")
    size: str = Field(default="1280x720", description=f"One of {', '.join(validation.SIZES)}")
    model: str = Field(default="animatic", description=f"One of {', '.join(validation.MODELS)}")
    narration: str | None = Field(default=None, max_length=validation.MAX_NARRATION_CHARS,
                                  description="Voice-over text; also becomes the subtitle track")
    voice: str = Field(default="en-us", description=f"Narration voice, one of {', '.join(validation.VOICES)}")
    seed: int | None = Field(default=None, ge=0, le=2**53, description="Same seed, same render")

    @field_validator("prompt")
    @classmethod
    def prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain text")
        return value.strip()

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

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> JobView:
        import json

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
        )


AuthCaller = Annotated[Caller, Depends(authenticate)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such job for this tenant"}}


@router.post("", status_code=202, response_model=JobView, responses={401: {}, 413: {}, 422: {}})
async def create_job(body: CreateJob, request: Request, response: Response, caller: AuthCaller) -> JobView:
    require_scope(caller, "jobs:write")
    width, height = validation.parse_size(body.size)
    row = await store.insert_job(
        request.app.state.pool,
        store.NewJob(
            tenant_id=caller.tenant_id, model=body.model, prompt=body.prompt, seconds=body.seconds,
            width=width, height=height, narration=(body.narration or "").strip() or None, voice=body.voice,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        ),
    )
    trace.get_current_span().set_attribute("reelforge.job_id", row["job_id"])
    response.headers["Location"] = f"/v1/jobs/{row['job_id']}"
    return JobView.from_row(row)


@router.get("/{job_id}", response_model=JobView, responses=_NOT_FOUND)
async def get_job(job_id: str, request: Request, caller: AuthCaller) -> JobView:
    return JobView.from_row(await _owned_job(request, caller, job_id))


@router.get("/{job_id}/content", response_class=FileResponse, responses={**_NOT_FOUND, 409: {}})
async def get_content(job_id: str, request: Request, caller: AuthCaller) -> FileResponse:
    row = await _owned_job(request, caller, job_id)
    if row["state"] != "completed" or not row["output_uri"]:
        raise Problem(409, "job_not_completed", "The video is not ready", f"The job is {row['state']}")
    content: ContentStore = request.app.state.content
    try:
        path = content.path_of(row["output_uri"])
    except ContentNotFound:
        raise Problem(410, "content_gone", "The video is no longer stored") from None
    return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4")


async def _owned_job(request: Request, caller: Caller, job_id: str) -> asyncpg.Record:
    require_scope(caller, "jobs:read")
    row = await store.get_job(request.app.state.pool, caller.tenant_id, job_id) if len(job_id) <= 64 else None
    if row is None:
        raise Problem(404, "job_not_found", "No such job", f"No job {job_id!r} for this API key's tenant")
    return row
