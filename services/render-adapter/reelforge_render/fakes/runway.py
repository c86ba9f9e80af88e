"""Fake Runway API (api.dev.runwayml.com).

Sources: Runway API reference https://docs.dev.runwayml.com/api/ (POST /v1/text_to_video and
/v1/image_to_video {model, promptText, promptImage?, ratio "1280:720", duration, seed?} -> {id};
GET /v1/tasks/{id} -> {id, status PENDING|THROTTLED|RUNNING|SUCCEEDED|FAILED|CANCELLED, createdAt, progress
(0-1 while RUNNING), output [urls], failure, failureCode}; DELETE /v1/tasks/{id} cancels or deletes, 204),
and the task examples at https://tryagi.github.io/Runway/examples/gettaskstatus. Every request needs
`Authorization: Bearer` and `X-Runway-Version: 2024-11-06`. Output URLs are on a CDN (another origin here).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from reelforge_render.fakes.common import (
    Behaviour,
    FakeJob,
    FakeProvider,
    bearer,
    cdn_url,
    install_common,
    submission_key,
)

API_VERSION = "2024-11-06"
# Runway's documented ratios, plus 320:180 (a test-only size that keeps the fake's renders fast).
RATIOS = {"1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672", "320:180"}
FAILURES = {"content_policy": ("SAFETY.INPUT.TEXT", "The prompt was flagged by our content moderation."),
            "invalid": ("ASSET.INVALID", "The input could not be used."),
            "error": ("INTERNAL.BAD_OUTPUT", "An unexpected error occurred.")}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": message}


def task(request: Request, job: FakeJob) -> dict[str, Any]:
    phase, progress = job.phase()
    body: dict[str, Any] = {"id": job.id, "createdAt": datetime.datetime.fromtimestamp(
        job.created_at, datetime.UTC).isoformat().replace("+00:00", "Z")}
    if phase == "cancelled":
        body["status"] = "CANCELLED"
    elif phase == "queued":
        body["status"] = "PENDING"
    elif phase == "running":
        body.update(status="RUNNING", progress=round(progress / 100, 2))
    elif job.outcome == "ok":
        body.update(status="SUCCEEDED", output=[cdn_url(request, job)])
    else:
        code, message = FAILURES.get(job.outcome, FAILURES["error"])
        body.update(status="FAILED", failure=message, failureCode=code)
    return body


def create_app(behaviour: Behaviour | None = None) -> FastAPI:
    fake = FakeProvider(behaviour)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.fake = fake
    authorized = bearer(fake)
    install_common(app, fake, error_body, authorized)

    @app.middleware("http")
    async def require_version(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/v1/") and request.headers.get("x-runway-version") != API_VERSION:
            return JSONResponse({"error": "The X-Runway-Version header is missing or invalid."}, status_code=400)
        response: Response = await call_next(request)
        return response

    async def create_task(request: Request, needs_image: bool) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "Invalid JSON"}, status_code=400)
        issues = []
        if needs_image and not body.get("promptImage"):
            issues.append({"path": ["promptImage"], "message": "Required"})
        if not needs_image and not body.get("promptText"):
            issues.append({"path": ["promptText"], "message": "Required"})
        if body.get("ratio") not in RATIOS:
            issues.append({"path": ["ratio"], "message": f"Invalid enum value. Expected one of {sorted(RATIOS)}"})
        if body.get("duration") not in (4, 5, 6, 8, 10):
            issues.append({"path": ["duration"], "message": "Invalid duration"})
        if issues:
            return JSONResponse({"error": "Validation of body failed", "issues": issues}, status_code=400)
        width, height = (int(v) for v in body["ratio"].split(":"))
        job, _ = fake.create(str(body.get("promptText", "")), width, height, float(body["duration"]),
                             str(body.get("model", "gen4_turbo")), job_id=str(uuid.uuid4()),
                             submission_key=submission_key(request))
        return JSONResponse({"id": job.id})

    @app.post("/v1/text_to_video")
    async def text_to_video(request: Request) -> Response:
        return await create_task(request, needs_image=False)

    @app.post("/v1/image_to_video")
    async def image_to_video(request: Request) -> Response:
        return await create_task(request, needs_image=True)

    @app.get("/v1/tasks/{task_id}")
    async def get_task(task_id: str, request: Request) -> Response:
        job = fake.jobs.get(task_id)
        if job is None:
            return JSONResponse({"error": "Task not found"}, status_code=404)
        fake.stats.polls += 1
        return JSONResponse(task(request, job))

    @app.delete("/v1/tasks/{task_id}")
    async def delete_task(task_id: str) -> Response:
        job = fake.jobs.get(task_id)
        if job is None:
            return JSONResponse({"error": "Task not found"}, status_code=404)
        job.cancelled = True
        fake.stats.cancels += 1
        return Response(status_code=204)

    return app
