"""Fake WaveSpeedAI API (api.wavespeed.ai, v3).

Sources: WaveSpeedAI docs https://wavespeed.ai/docs/submit-task, https://wavespeed.ai/docs/get-result,
https://wavespeed.ai/docs/what-are-predictions, https://wavespeed.ai/docs/shared/submit-response,
https://wavespeed.ai/docs-api/webhooks and the model page
https://wavespeed.ai/models/wavespeed-ai/wan-2.1/t2v-720p-ultra-fast/llms.txt.
POST /api/v3/{model-id} (model ids contain slashes, e.g. wavespeed-ai/wan-2.1/t2v-720p) with the model's
input as the body ({prompt, negative_prompt?, size "1280*720", duration, seed}), `?webhook=<url>` for a
callback; every answer is an envelope {code, message, data}, where data is the prediction {id, model,
outputs [urls], urls{get}, has_nsfw_contents [bool], status created|processing|completed|failed, created_at,
error, timings{inference ms}}. GET /api/v3/predictions/{id}/result (and /api/v3/predictions/{id}) reads it.
The webhook POSTs the bare prediction object once it is completed or failed, signed as in
https://wavespeed.ai/docs/docs-api/verifying_webhook (webhook-id/-timestamp/-signature `v3,<hex>`).
Errors come as the same envelope with the HTTP status in `code` and data null. The API has no cancel and no
idempotency key.
Auth: `Authorization: Bearer <key>`.
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
    cdn_url,
    fake_app,
    submission_key,
)
from reelforge_render.fakes.signing import wavespeed_headers

# The wan-2.1 text-to-video sizes (480p and 720p tiers) plus 320*180 (test-only: keeps renders fast).
SIZES = {"1280*720", "720*1280", "832*480", "480*832", "320*180"}
DURATIONS = (5, 10)
FAILURES = {"content_policy": "The input or output was flagged as potentially sensitive content (NSFW).",
            "invalid": "Invalid input: the prompt could not be processed.",
            "error": "Inference failed: internal server error."}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "message": message, "data": None}


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def prediction(request: Request, job: FakeJob) -> dict[str, Any]:
    phase, _ = job.phase()
    base = str(request.base_url).rstrip("/")
    body: dict[str, Any] = {
        "id": job.id, "model": job.model, "input": job.extra.get("input", {}), "outputs": [],
        "urls": {"get": f"{base}/api/v3/predictions/{job.id}/result"}, "has_nsfw_contents": [],
        "status": "created", "created_at": _iso(job.created_at), "error": "", "timings": {},
    }
    if phase == "running":
        body["status"] = "processing"
    elif phase == "done" and job.outcome == "ok":
        body.update(status="completed", outputs=[cdn_url(request, job)], has_nsfw_contents=[False],
                    timings={"inference": int(job.latency_s * 1000)})
    elif phase == "done":
        body.update(status="failed", error=FAILURES.get(job.outcome, FAILURES["error"]))
    return body


def create_app(behaviour: Behaviour | None = None) -> FastAPI:
    app, fake = fake_app(behaviour, error_body)

    def fail(status: int, message: str) -> JSONResponse:
        return JSONResponse(error_body(status, message), status_code=status)

    def envelope(data: dict[str, Any]) -> JSONResponse:
        return JSONResponse({"code": 200, "message": "success", "data": data})

    async def get_prediction(prediction_id: str, request: Request) -> Response:
        job = fake.jobs.get(prediction_id)
        if job is None:
            return fail(404, "prediction not found")
        fake.stats.polls += 1
        return envelope(prediction(request, job))

    app.get("/api/v3/predictions/{prediction_id}/result")(get_prediction)
    app.get("/api/v3/predictions/{prediction_id}")(get_prediction)

    @app.post("/api/v3/{model_id:path}")
    async def submit(model_id: str, request: Request) -> Response:
        if model_id.count("/") < 1:
            return fail(404, f"model {model_id} not found")
        try:
            body = await request.json()
        except ValueError:
            return fail(400, "invalid request body")
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return fail(400, "prompt is required")
        size, duration = body.get("size", "1280*720"), body.get("duration", 5)
        if size not in SIZES:
            return fail(400, f"size must be one of {sorted(SIZES)}")
        if duration not in DURATIONS:
            return fail(400, f"duration must be one of {list(DURATIONS)}")
        width, height = (int(v) for v in str(size).split("*"))
        job, _ = fake.create(body["prompt"], width, height, float(duration), model_id, job_id=uuid.uuid4().hex,
                             submission_key=submission_key(request))
        job.extra["input"] = body
        webhook = request.query_params.get("webhook")
        if webhook and not fake.behaviour.webhook_url:
            fake.behaviour.webhook_url = webhook
        if webhook:
            fake.announce(job, lambda j: prediction(request, j),
                          lambda body: wavespeed_headers(fake.behaviour.webhook_secret, body))
        return envelope(prediction(request, job))

    return app
