"""Fake fal queue API (queue.fal.run).

Sources: https://docs.fal.ai/documentation/model-apis/inference/queue and
https://fal.ai/docs/inference-api/queue/cancel, plus https://docs.rs/crate/fal/latest/source/src/queue.rs.
POST /{owner}/{app}[/{path}] (the model input as the body; `?fal_webhook=` for a callback) -> {request_id,
response_url, status_url, cancel_url, queue_position}; GET /{owner}/{app}/requests/{id}/status ->
{status IN_QUEUE|IN_PROGRESS|COMPLETED, queue_position, response_url, logs, metrics}; GET
/{owner}/{app}/requests/{id} -> the model output ({video: {url, content_type, file_name, file_size}, seed}) or
the error (422 {detail: [{loc, msg, type}]}, type content_policy_violation for safety; 500 otherwise);
PUT .../cancel -> 202 {status: CANCELLATION_REQUESTED} or 400 {status: ALREADY_COMPLETED}.
Status and result URLs drop the endpoint sub-path. Auth: `Authorization: Key <key>`. Webhooks
(https://docs.fal.ai/model-apis/model-endpoints/webhooks): {request_id, gateway_request_id, status OK|ERROR,
payload, error}, signed with ED25519 (fakes/signing.py); the fake serves its JWKS at /.well-known/jwks.json.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from reelforge_render.fakes.common import (
    Behaviour,
    FakeJob,
    bearer,
    cdn_url,
    fake_app,
    submission_key,
)
from reelforge_render.fakes.signing import FalSigner

ASPECTS = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"detail": message}


def create_app(behaviour: Behaviour | None = None) -> FastAPI:
    app, fake = fake_app(behaviour, error_body, lambda f: bearer(f, scheme="Key"))

    signer = FalSigner()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return signer.jwks()

    def webhook_body(request: Request, job: FakeJob) -> dict[str, Any]:
        """{request_id, gateway_request_id, status OK|ERROR, payload (the result or the error details), error}."""
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if job.outcome == "ok":
            return {**body, "status": "OK", "payload": {
                "video": {"url": cdn_url(request, job), "content_type": "video/mp4", "file_name": "output.mp4"},
                "seed": 42}}
        if job.outcome == "content_policy":
            payload: Any = {"detail": [{"loc": ["body", "prompt"], "type": "content_policy_violation",
                                        "msg": "The content could not be processed because it contained material "
                                               "flagged by a content checker."}]}
            return {**body, "status": "ERROR", "error": "Invalid status code: 422", "payload": payload}
        if job.outcome == "invalid":
            payload = {"detail": [{"loc": ["body", "prompt"], "msg": "Invalid prompt.", "type": "value_error"}]}
            return {**body, "status": "ERROR", "error": "Invalid status code: 422", "payload": payload}
        return {**body, "status": "ERROR", "error": "Invalid status code: 500",
                "payload": {"detail": "Internal server error"}}

    def urls(request: Request, app_id: str, job: FakeJob) -> dict[str, str]:
        base = f"{str(request.base_url).rstrip('/')}/{app_id}/requests/{job.id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def queue_position(job: FakeJob) -> int:
        return sum(1 for other in fake.jobs.values() if other.phase()[0] == "queued" and other.created < job.created)

    @app.get("/{owner}/{name}/requests/{request_id}/status")
    async def status(owner: str, name: str, request_id: str, request: Request) -> Response:
        job = fake.jobs.get(request_id)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        fake.stats.polls += 1
        phase, progress = job.phase()
        body: dict[str, Any] = {"response_url": urls(request, f"{owner}/{name}", job)["response_url"]}
        if phase == "queued":
            body.update(status="IN_QUEUE", queue_position=queue_position(job))
        elif phase == "running":
            body.update(status="IN_PROGRESS", logs=[{"message": f"Generating... {progress}%", "level": "INFO",
                                                     "source": "user", "timestamp": "2026-01-01T00:00:00Z"}])
        else:
            body.update(status="COMPLETED", logs=[], metrics={"inference_time": job.latency_s})
        return JSONResponse(body)

    @app.get("/{owner}/{name}/requests/{request_id}")
    async def result(owner: str, name: str, request_id: str, request: Request) -> Response:
        job = fake.jobs.get(request_id)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        phase, _ = job.phase()
        if phase in ("queued", "running"):
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        if phase == "cancelled":
            return JSONResponse({"detail": "Request was cancelled"}, status_code=400)
        if job.outcome == "content_policy":
            return JSONResponse({"detail": [{"loc": ["body", "prompt"], "msg": "The content could not be processed "
                                             "because it contained material flagged by a content checker.",
                                             "type": "content_policy_violation"}]}, status_code=422)
        if job.outcome == "invalid":
            return JSONResponse({"detail": [{"loc": ["body", "prompt"], "msg": "Invalid prompt.",
                                             "type": "value_error"}]}, status_code=422)
        if job.outcome != "ok":
            return JSONResponse({"detail": "Internal server error"}, status_code=500)
        video = await fake.video(job, counted=False)
        return JSONResponse({"video": {"url": cdn_url(request, job), "content_type": "video/mp4",
                                       "file_name": "output.mp4", "file_size": len(video)}, "seed": 42})

    @app.put("/{owner}/{name}/requests/{request_id}/cancel")
    async def cancel(owner: str, name: str, request_id: str) -> Response:
        job = fake.jobs.get(request_id)
        if job is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
        fake.stats.cancels += 1
        if job.phase()[0] == "done":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        job.cancelled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    @app.post("/{app_path:path}")
    async def submit(app_path: str, request: Request) -> Response:
        parts = app_path.strip("/").split("/")
        if len(parts) < 2:
            return JSONResponse({"detail": "Application not found"}, status_code=404)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"detail": "Invalid JSON"}, status_code=422)
        errors = []
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            errors.append({"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"})
        if body.get("aspect_ratio", "16:9") not in ASPECTS:
            errors.append({"loc": ["body", "aspect_ratio"], "msg": "unexpected value", "type": "value_error"})
        duration = str(body.get("duration", "5s"))
        if duration not in ("4s", "5s", "6s", "8s", "10s"):
            errors.append({"loc": ["body", "duration"], "msg": "unexpected value", "type": "value_error"})
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        width, height = ASPECTS[body.get("aspect_ratio", "16:9")]
        job, _ = fake.create(body["prompt"], width, height, float(duration[:-1]), "/".join(parts),
                             job_id=str(uuid.uuid4()), submission_key=submission_key(request))
        webhook = request.query_params.get("fal_webhook")
        if webhook and not fake.behaviour.webhook_url:
            fake.behaviour.webhook_url = webhook
        fake.announce(job, lambda j: webhook_body(request, j), lambda body: signer.headers(job.id, body))
        return JSONResponse({"request_id": job.id, **urls(request, "/".join(parts[:2]), job),
                             "queue_position": queue_position(job)})

    return app
