"""New videos made from another one, as the OpenAI SDK asks for them: remix (`POST /v1/videos/{id}/remix`),
edit (`POST /v1/videos/edits`) and extension (`POST /v1/videos/extensions`).

Each is a new job whose input reference is the source video: a completed video of the caller's tenant
(another tenant's, or a missing one, is the same 404) or, for edits and extensions, an uploaded MP4.
The job keeps which video it derives from and how (JobSpec.source_job_id / source_operation), so a
provider that remixes natively can be given the source. An extension's `seconds` is the stitched total.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reelforge_core import media
from reelforge_core.content import ContentStore
from reelforge_gateway import validation
from reelforge_gateway.api import idempotency
from reelforge_gateway.api.auth import Caller, authenticate, moderate, owned_job, require_scope
from reelforge_gateway.api.problems import OPENAI_ERRORS, Problem
from reelforge_gateway.api.videos import (
    OPENAI_MODELS,
    SIZES,
    Video,
    json_body_schema,
    new_video_job,
    not_found,
    parse,
    read_body,
    store_upload,
    submit_video,
)
from reelforge_gateway.store import Idempotency

router = APIRouter(prefix="/v1/videos", tags=["openai-compatible videos"])
AuthCaller = Annotated[Caller, Depends(authenticate)]
EXTENSION_SECONDS = ("4", "8", "12", "16", "20")
UPLOAD_PATHS = ("/v1/videos/edits", "/v1/videos/extensions")
_ERRORS: dict[int | str, dict[str, Any]] = {**OPENAI_ERRORS,
                                            409: {**OPENAI_ERRORS[400], "description": "Source not completed"}}


class VideoReference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, description="A completed video of this tenant")


class _Prompted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=validation.MAX_PROMPT_CHARS)

    @field_validator("prompt")
    @classmethod
    def prompt_has_text(cls, value: str) -> str:
        return validation.required_text(value, "prompt")


class RemixRequest(_Prompted):
    pass


class EditRequest(_Prompted):
    video: VideoReference | None = Field(default=None, description="JSON: {id}; multipart: an MP4 file part")


class ExtendRequest(EditRequest):
    seconds: Literal["4", "8", "12", "16", "20"] = Field(description="Length of the new segment")


def _body_doc(model: type[BaseModel], form_fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a body sent as JSON (`video: {id}`) or multipart (`video` an MP4 part)."""
    multipart = {"type": "object", "required": [*form_fields, "video"],
                 "properties": {**form_fields, "video": {"type": "string", "format": "binary"}}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_body_schema(model)}, "multipart/form-data": {"schema": multipart}}}}


_Request = TypeVar("_Request", bound=EditRequest)


class _Source:
    """The video a derivative starts from: a job of the tenant, or an uploaded file."""

    def __init__(self, uri: str, seconds: float, width: int, height: int, model: str, job_id: str | None) -> None:
        self.uri, self.seconds, self.width, self.height = uri, seconds, width, height
        self.model, self.job_id = model, job_id


@router.post("/{video_id}/remix", response_model=Video, responses=_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": json_body_schema(RemixRequest)}}}})
async def remix_video(video_id: str, request: Request, caller: AuthCaller) -> JSONResponse:
    """A new video from a completed one and a new prompt; same model, length and size."""
    require_scope(caller, "jobs:write")
    source = await _owned_source(request, caller, video_id)  # before the body: a foreign id is a 404, whatever
    body = parse(RemixRequest, (await read_body(request, file_field=""))[0])
    moderate(request, body.prompt)
    key = idempotency.from_request(request, body.model_dump(mode="json"))
    return await _submit(request, caller, key, source, body.prompt, source.seconds, "remix")


@router.post("/edits", response_model=Video, responses=_ERRORS,
             openapi_extra=_body_doc(EditRequest, {"prompt": {"type": "string"}}))
async def edit_video(request: Request, caller: AuthCaller) -> JSONResponse:
    """A new video that edits a completed video (`video: {id}`) or an uploaded MP4 (`video` file part)."""
    body, source, key = await _from_video(request, caller, EditRequest)
    return await _submit(request, caller, key, source, body.prompt, source.seconds, "edit")


@router.post("/extensions", response_model=Video, responses=_ERRORS,
             openapi_extra=_body_doc(ExtendRequest, {"prompt": {"type": "string"},
                                                     "seconds": {"type": "string", "enum": list(EXTENSION_SECONDS)}}))
async def extend_video(request: Request, caller: AuthCaller) -> JSONResponse:
    """The source video continued by `seconds`; the new video is the whole, its length the stitched total."""
    body, source, key = await _from_video(request, caller, ExtendRequest)
    total = source.seconds + float(body.seconds)
    if total > validation.MAX_SECONDS:
        raise Problem(400, "invalid_value", "The extended video would be too long",
                      f"{source.seconds:g} s + {body.seconds} s exceeds {validation.MAX_SECONDS:g} s", param="seconds")
    return await _submit(request, caller, key, source, body.prompt, total, "extension")


async def _from_video(request: Request, caller: Caller,
                      model: type[_Request]) -> tuple[_Request, _Source, Idempotency | None]:
    """An edit or extension request: its body, the source video (by id or uploaded), its idempotency key."""
    require_scope(caller, "jobs:write")
    fields, upload = await read_body(request, "video")
    body = parse(model, fields)
    moderate(request, body.prompt)
    source, key = await _source_and_key(request, caller, body, upload)
    return body, source, key


async def _source_and_key(request: Request, caller: Caller, body: EditRequest,
                          upload: bytes | None) -> tuple[_Source, Idempotency | None]:
    canonical = body.model_dump(mode="json")
    if upload is not None:
        canonical["video"] = hashlib.sha256(upload).hexdigest()
        key = idempotency.from_request(request, canonical)
        return await _uploaded_source(request, upload), key
    if body.video is None:
        raise Problem(400, "invalid_value", "video is required",
                      "Pass video as {\"id\": ...} or upload an MP4 as the video part", param="video")
    return await _owned_source(request, caller, body.video.id), idempotency.from_request(request, canonical)


async def _owned_source(request: Request, caller: Caller, video_id: str) -> _Source:
    row: asyncpg.Record = await owned_job(request, caller, video_id, not_found)
    if row["state"] != "completed" or not row["output_uri"]:
        raise Problem(409, "video_not_ready", "The source video is not completed",
                      f"Video {video_id} is {row['state']}; only a completed video can be remixed, edited or extended",
                      param="video_id")
    return _Source(row["output_uri"], float(row["seconds"]), row["width"], row["height"],
                   row["requested_model"] or OPENAI_MODELS[0], row["job_id"])


async def _uploaded_source(request: Request, data: bytes) -> _Source:
    uri = await store_upload(request, data, "video", only=(".mp4",))
    content: ContentStore = request.app.state.content
    try:
        probed = await media.probe(content.path_of(uri), timeout_s=20)
    except media.MediaError:
        raise Problem(400, "invalid_video", "The video could not be read as an MP4", param="video") from None
    picture = probed.video
    if picture is None or not picture.width or not picture.height or probed.duration_s <= 0:
        raise Problem(400, "invalid_video", "The uploaded file has no video stream", param="video")
    width, height = _nearest_size(picture.width, picture.height)
    seconds = float(min(validation.MAX_SECONDS, max(validation.MIN_SECONDS, round(probed.duration_s))))
    return _Source(uri, seconds, width, height, OPENAI_MODELS[0], None)


def _nearest_size(width: int, height: int) -> tuple[int, int]:
    """The upload's own size if we render it, else the OpenAI size of the same orientation and closest shape."""
    if f"{width}x{height}" in validation.SIZES:
        return width, height
    shapes = [validation.parse_size(size) for size in SIZES]
    return min(shapes, key=lambda wh: abs(wh[0] / wh[1] - width / height))


async def _submit(request: Request, caller: Caller, key: Idempotency | None, source: _Source, prompt: str,
                  seconds: float, operation: str) -> JSONResponse:
    job = new_video_job(caller, source.model, prompt, seconds, source.width, source.height,
                        input_reference_uri=source.uri, source_job_id=source.job_id, source_operation=operation)
    return await submit_video(request, caller, key, job)

