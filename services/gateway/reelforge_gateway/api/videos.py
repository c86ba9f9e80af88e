"""OpenAI-compatible /v1/videos: the official `openai` SDK works unmodified against these routes.

Shapes follow the SDK's own types (openai/types/video*.py): the Video object, the cursor-paged list
(`data`, `first_id`, `last_id`, `has_more`), `video.deleted`, binary content, and OpenAI's error
object. Jobs are shared with the native API; a Video is another view of a job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile

from reelforge.postprocess.v1 import postprocess_pb2
from reelforge_core.content import ContentStore, ContentStoreError
from reelforge_gateway import store, validation
from reelforge_gateway.api import idempotency, pages, variants
from reelforge_gateway.api.auth import Caller, authenticate, moderate, owned_job, require_scope
from reelforge_gateway.api.problems import OPENAI_ERRORS, Problem
from reelforge_gateway.settings import GatewaySettings

router = APIRouter(prefix="/v1/videos", tags=["openai-compatible videos"])

# The SDK's VideoModel literals, and ours: each is a route in the orchestrator (model_routes), priced by billing.
OPENAI_MODELS = ("sora-2", "sora-2-pro", "sora-2-2025-10-06", "sora-2-pro-2025-10-06", "sora-2-2025-12-08")
MODELS = (*OPENAI_MODELS, *validation.MODELS)
SECONDS = ("4", "8", "12")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
VideoStatus = Literal["queued", "in_progress", "completed", "failed"]
_STATUS: dict[str, VideoStatus] = {
    "queued": "queued", "admitted": "queued", "rendering": "in_progress", "postprocessing": "in_progress",
           "completed": "completed", "failed": "failed", "cancelled": "failed", "expired": "failed"}
# Every OpenAI-shaped job is finished with a poster frame and a sprite sheet: the SDK's download variants.
PREVIEWS = postprocess_pb2.PostprocessOptions(
    thumbnails=postprocess_pb2.Thumbnails(thumbnail=True, sprite=True)).SerializeToString()
_Body = TypeVar("_Body", bound=BaseModel)
# Magic numbers of the reference formats accepted (images and MP4), to refuse anything else early.
_REFERENCE_TYPES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}


class InputReferenceObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_url: str | None = None
    file_id: str | None = None


class VideoCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=validation.MAX_PROMPT_CHARS)
    model: str = Field(default="sora-2", description=f"One of {', '.join(MODELS)}")
    seconds: Literal["4", "8", "12"] = "4"
    size: Literal["720x1280", "1280x720", "1024x1792", "1792x1024"] = "720x1280"
    input_reference: InputReferenceObject | None = Field(
        default=None, description="JSON: {image_url: data URL}; multipart: a PNG, JPEG, WebP or MP4 file part")

    @field_validator("prompt")
    @classmethod
    def prompt_has_text(cls, value: str) -> str:
        return validation.required_text(value, "prompt")

    @field_validator("model")
    @classmethod
    def known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}")
        return value


class VideoCreateError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    id: str
    object: Literal["video"] = "video"
    created_at: int
    completed_at: int | None
    expires_at: int | None = None
    error: VideoCreateError | None
    model: str
    progress: int
    prompt: str | None
    remixed_from_video_id: str | None = None
    seconds: str
    size: str
    status: VideoStatus

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Video:
        status: VideoStatus = _STATUS.get(row["state"], "queued")
        error = None
        if row["error_code"]:
            error = VideoCreateError(code=row["error_code"], message=row["error_message"] or row["error_code"])
        elif row["state"] in ("cancelled", "expired"):
            error = VideoCreateError(code=row["state"], message=f"The video job was {row['state']}")
        seconds = float(row["seconds"])
        finished = row["completed_at"] if status == "completed" else None
        return cls(
            id=row["job_id"], created_at=int(row["created_at"].timestamp()),
            completed_at=int(finished.timestamp()) if finished else None,
            error=error, model=row["requested_model"] or row["model"],
            progress=100 if status == "completed" else min(int(row["progress"]), 99), prompt=row["prompt"],
            seconds=str(int(seconds)) if seconds.is_integer() else str(seconds),
            size=f"{row['width']}x{row['height']}", status=status,
            remixed_from_video_id=row["source_job_id"] if row["source_operation"] == "remix" else None,
        )


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


AuthCaller = Annotated[Caller, Depends(authenticate)]
_ERRORS = OPENAI_ERRORS


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # nested models are added to the components by the app
    return schema


_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string"}, "model": {"type": "string"},
                    "seconds": {"type": "string", "enum": list(SECONDS)},
                    "size": {"type": "string", "enum": list(SIZES)},
                    "input_reference": {"type": "string", "format": "binary"},
                },
            }},
            "application/json": {"schema": json_body_schema(VideoCreate)},
        },
    }
}


@router.post("", response_model=Video, responses={**_ERRORS, 413: _ERRORS[400], 415: _ERRORS[400]},
             openapi_extra=_CREATE_BODY)
async def create_video(request: Request, caller: AuthCaller) -> JSONResponse:
    require_scope(caller, "jobs:write")
    fields, upload = await read_body(request, "input_reference")
    body = parse(VideoCreate, fields)
    moderate(request, body.prompt)
    reference_bytes = upload if upload is not None else _decode_reference(body.input_reference)
    canonical = {**body.model_dump(mode="json"),
                 "input_reference": hashlib.sha256(reference_bytes).hexdigest() if reference_bytes else None}
    key = idempotency.from_request(request, canonical)
    reference_uri = await store_upload(request, reference_bytes, "input_reference") if reference_bytes else None
    width, height = validation.parse_size(body.size)
    return await submit_video(request, caller, key, new_video_job(
        caller, body.model, body.prompt, float(body.seconds), width, height, input_reference_uri=reference_uri))


def parse(model: type[_Body], fields: dict[str, Any]) -> _Body:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def new_video_job(caller: Caller, requested_model: str, prompt: str, seconds: float, width: int, height: int,
                  **extra: Any) -> store.NewJob:
    """A job as the OpenAI routes make it: routed by the requested model's name, finished with a
    poster frame and a sprite sheet (the thumbnail and spritesheet download variants)."""
    return store.NewJob(
        tenant_id=caller.tenant_id, model=requested_model, requested_model=requested_model, prompt=prompt,
        seconds=seconds, width=width, height=height, narration=None, voice="en-us", seed=secrets.randbelow(2**31),
        postprocess_options=PREVIEWS, **extra,
    )


async def submit_video(request: Request, caller: Caller, key: store.Idempotency | None,
                       job: store.NewJob) -> JSONResponse:
    try:
        submitted = await store.submit_job(
            request.app.state.pool, job, lambda row: Video.from_row(row).model_dump(mode="json"), 200, key,
            admit=request.app.state.gatekeeper.job_admission(caller))
    except store.IdempotencyKeyReused:
        assert key is not None
        raise idempotency.reused(key) from None
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    return JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)


@router.get("", response_model=VideoList, responses=_ERRORS)
async def list_videos(
    request: Request, caller: AuthCaller,
    after: Annotated[str | None, Query(max_length=64, description="Id of the last video of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> VideoList:
    require_scope(caller, "jobs:read")
    pool = request.app.state.pool
    position = await pages.position_after(after, lambda video_id: store.job_position(pool, caller.tenant_id, video_id),
                                          "video")
    rows = await store.list_jobs(pool, caller.tenant_id, limit + 1, order == "desc", position)
    videos = [Video.from_row(row) for row in rows[:limit]]
    return VideoList(data=videos, first_id=videos[0].id if videos else None,
                     last_id=videos[-1].id if videos else None, has_more=len(rows) > limit)


@router.get("/{video_id}", response_model=Video, responses=_ERRORS)
async def retrieve_video(video_id: str, request: Request, caller: AuthCaller) -> JSONResponse:
    video = Video.from_row(await owned_job(request, caller, video_id, not_found))
    settings: GatewaySettings = request.app.state.settings
    headers = {"openai-poll-after-ms": str(settings.poll_after_ms)} if video.status in ("queued", "in_progress") else {}
    return JSONResponse(video.model_dump(mode="json"), headers=headers)


@router.delete("/{video_id}", response_model=VideoDeleted, responses=_ERRORS)
async def delete_video(video_id: str, request: Request, caller: AuthCaller) -> VideoDeleted:
    require_scope(caller, "jobs:write")
    if len(video_id) > 64 or not await store.delete_job(request.app.state.pool, caller.tenant_id, video_id):
        raise not_found(video_id)
    return VideoDeleted(id=video_id)


@router.get("/{video_id}/content", response_class=FileResponse,
            responses={**_ERRORS, 200: {"content": {"video/mp4": {}, "image/jpeg": {}}}, 409: _ERRORS[400]})
async def download_video(
    video_id: str, request: Request, caller: AuthCaller,
    variant: Annotated[Literal["video", "thumbnail", "spritesheet"], Query()] = "video",
) -> FileResponse:
    """The MP4, or its poster frame (`thumbnail`) or sprite sheet (`spritesheet`), both JPEG."""
    row = await owned_job(request, caller, video_id, not_found)
    if row["state"] != "completed" or not row["output_uri"]:
        raise Problem(409, "video_not_ready", "The video is not ready",
                      f"Video {video_id} is {_STATUS.get(row['state'], row['state'])}")
    return await variants.file_response(request.app.state.content, row, variant, 404)


def not_found(video_id: str) -> Problem:
    return Problem(404, "video_not_found", "No such video", f"No video {video_id[:64]!r} for this API key")


async def read_body(request: Request, file_field: str) -> tuple[dict[str, Any], bytes | None]:
    """JSON or multipart (what the SDK sends): the fields, and the bytes of the one file part allowed.
    Multipart spells nested objects as `name[key]` parts; they come back as {name: {key: value}}."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception as exc:  # starlette raises several types for a malformed form
            if getattr(exc, "status_code", None) == 413:
                raise
            raise Problem(400, "malformed_form", "The form body could not be parsed", str(exc)[:200]) from None
        fields: dict[str, Any] = {}
        upload: bytes | None = None
        for name, value in form.multi_items():
            outer, bracket, inner = name.partition("[")
            if isinstance(value, UploadFile):
                if name != file_field:
                    raise Problem(400, "invalid_value", "Unexpected file part", f"File part {name!r}", param=name)
                upload = await value.read()
            elif bracket and inner.endswith("]") and isinstance(fields.setdefault(outer, {}), dict):
                fields[outer][inner[:-1]] = value
            else:
                fields[name] = value
        return fields, upload
    if content_type != "application/json":
        raise Problem(415, "unsupported_media_type", "Unsupported Content-Type",
                      "Send application/json or multipart/form-data")
    try:
        body = await request.json()
    except ValueError:
        raise Problem(400, "malformed_json", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "invalid_value", "The request body must be a JSON object")
    return body, None


def _decode_reference(reference: InputReferenceObject | None) -> bytes | None:
    if reference is None:
        return None
    if reference.file_id is not None or not reference.image_url:
        raise Problem(400, "unsupported_input_reference", "Unsupported input_reference",
                      "Upload the file as a multipart part, or pass image_url as a base64 data URL",
                      param="input_reference")
    header, _, data = reference.image_url.partition(",")
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise Problem(400, "unsupported_input_reference", "Unsupported input_reference",
                      "Only base64 data URLs are accepted as image_url; remote URLs are not fetched",
                      param="input_reference")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(400, "invalid_value", "input_reference is not valid base64", param="input_reference") from None


def reference_suffix(data: bytes) -> str | None:
    for magic, suffix in _REFERENCE_TYPES.items():
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[4:8] == b"ftyp":
        return ".mp4"
    return None


async def store_upload(request: Request, data: bytes, param: str, only: tuple[str, ...] = ()) -> str:
    """Puts an uploaded reference in the content store; its URI goes to the job (input_reference_uri)."""
    suffix = reference_suffix(data)
    if suffix is None or (only and suffix not in only):
        kinds = "an MP4 file" if only == (".mp4",) else "a PNG, JPEG, WebP or MP4 file"
        raise Problem(400, f"invalid_{param}", f"{param} must be {kinds}", param=param)
    content: ContentStore = request.app.state.content

    def put() -> str:
        with tempfile.NamedTemporaryFile(dir=content.scratch_dir(), suffix=suffix, delete=False) as handle:
            handle.write(data)
            path = Path(handle.name)
        try:
            return content.put(path).uri
        finally:
            path.unlink(missing_ok=True)

    try:
        return await asyncio.to_thread(put)
    except ContentStoreError:
        raise Problem(503, "content_unavailable", "The content store is not reachable; try again") from None
