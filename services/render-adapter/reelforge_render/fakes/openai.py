"""Fake OpenAI Videos API (also the shape of Azure OpenAI, compatible gateways and our GPU pool).

Source: https://developers.openai.com/api/reference/resources/videos (create/retrieve/delete/content,
Video object: id, object "video", model, status queued|in_progress|completed|failed, progress, created_at,
completed_at, expires_at, seconds, size, error{code, message}); https://developers.openai.com/api/docs/
guides/video-generation (poll GET /videos/{id} until completed, then GET /videos/{id}/content; webhooks
`video.completed` / `video.failed` with data.id, set up per project, signed as Standard Webhooks: see
https://platform.openai.com/docs/guides/webhooks; the fake's URL is set with POST /_fake/behaviour).
Errors use {"error": {message, type, param, code}}.
Sizes and seconds are the documented enums. `Idempotency-Key` is honoured (gateways and our pool do).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from reelforge_render.fakes.common import Behaviour, FakeJob, FakeProvider, bearer, install_common
from reelforge_render.fakes.signing import standard_headers

SECONDS = ("4", "8", "12", "16", "20")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024", "1080x1920", "1920x1080",
         "320x180", "640x360")  # the last two: small sizes our GPU pool serves, which keep tests fast
ERROR_CODES = {"content_policy": ("moderation_blocked", "Your request was blocked by our moderation system."),
               "invalid": ("invalid_prompt", "The prompt could not be used."),
               "error": ("internal_error", "Video generation failed.")}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind = {401: "invalid_request_error", 429: "rate_limit_exceeded", 404: "invalid_request_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def video_object(fake: FakeProvider, job: FakeJob) -> dict[str, Any]:
    phase, progress = job.phase()
    status = {"queued": "queued", "running": "in_progress", "cancelled": "failed"}.get(
        phase, "completed" if job.outcome == "ok" else "failed")
    body: dict[str, Any] = {
        "id": job.id, "object": "video", "model": job.model, "status": status, "progress": progress,
        "created_at": job.created_at, "completed_at": int(time.time()) if status in ("completed", "failed") else None,
        "expires_at": job.created_at + 3600 if status == "completed" else None,
        "prompt": job.prompt, "seconds": f"{job.seconds:g}", "size": f"{job.width}x{job.height}",
        "remixed_from_video_id": None, "error": None,
    }
    if status == "failed":
        code, message = ERROR_CODES.get(job.outcome, ("cancelled", "The video was deleted."))
        body["error"] = {"code": code, "message": message}
    if fake.behaviour.gpus and status == "completed":
        body["usage"] = {"gpus": fake.behaviour.gpus, "gpu_seconds": round(fake.behaviour.gpus * job.latency_s, 3)}
    return body


def create_app(behaviour: Behaviour | None = None) -> FastAPI:
    fake = FakeProvider(behaviour)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.fake = fake
    check = bearer(fake)

    def authorized(request: Request) -> bool:
        return check(request) or request.headers.get("api-key") == fake.behaviour.api_key  # Azure's header

    install_common(app, fake, error_body, authorized)

    def fail(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(status, message, code, param), status_code=status)

    @app.post("/v1/videos")
    async def create_video(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            body: dict[str, Any] = dict((await request.form()).items())
        else:
            try:
                body = await request.json()
            except ValueError:
                return fail(400, "We could not parse the JSON body of your request.")
        prompt, model = body.get("prompt"), body.get("model", "sora-2")
        seconds, size = str(body.get("seconds", "4")), str(body.get("size", "720x1280"))
        if not isinstance(prompt, str) or not prompt.strip():
            return fail(400, "Missing required parameter: 'prompt'.", "missing_required_parameter", "prompt")
        if seconds not in SECONDS:
            return fail(400, f"Invalid value: '{seconds}'. Supported values are: {', '.join(SECONDS)}.",
                        "invalid_value", "seconds")
        if size not in SIZES:
            return fail(400, f"Invalid value: '{size}'. Supported values are: {', '.join(SIZES)}.",
                        "invalid_value", "size")
        width, height = (int(v) for v in size.split("x"))
        job, new = fake.create(prompt, width, height, float(seconds), str(model),
                               request.headers.get("idempotency-key"), job_id=f"video_{uuid_hex()}")
        if new:
            fake.announce(job, lambda j: {"id": f"evt_{uuid_hex()}", "object": "event", "created_at": int(time.time()),
                                          "type": "video.completed" if j.outcome == "ok" else "video.failed",
                                          "data": {"id": j.id}},
                          lambda body: standard_headers(fake.behaviour.webhook_secret, body))
        return JSONResponse(video_object(fake, job))

    @app.get("/v1/videos/{video_id}")
    async def retrieve_video(video_id: str) -> Response:
        job = fake.jobs.get(video_id)
        if job is None:
            return fail(404, f"Video with id '{video_id}' not found.", "video_not_found")
        fake.stats.polls += 1
        return JSONResponse(video_object(fake, job))

    @app.delete("/v1/videos/{video_id}")
    async def delete_video(video_id: str) -> Response:
        job = fake.jobs.get(video_id)
        if job is None:
            return fail(404, f"Video with id '{video_id}' not found.", "video_not_found")
        job.cancelled = True
        fake.stats.cancels += 1
        return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

    @app.get("/v1/videos/{video_id}/content")
    async def video_content(video_id: str, variant: str = "video") -> Response:
        job = fake.jobs.get(video_id)
        if job is None:
            return fail(404, f"Video with id '{video_id}' not found.", "video_not_found")
        if not job.succeeded:
            return fail(400, "Video is not ready yet; wait until its status is completed.", "video_not_ready")
        if variant != "video":
            return fail(400, f"Invalid value: '{variant}'.", "invalid_value", "variant")
        return Response(await fake.video(job), media_type="video/mp4")

    return app


def uuid_hex() -> str:
    return uuid.uuid4().hex
