"""Fake Replicate HTTP API (predictions).

Sources: https://replicate.com/docs/reference/http, https://replicate.com/docs/topics/webhooks/receive-webhook
and https://replicate.com/changelog/2023-02-10-improved-webhook-events-and-event-filtering. Prediction object:
{id, model, version, input, logs, output, data_removed, error, status starting|processing|succeeded|failed|
canceled, created_at, started_at, completed_at, urls{get, cancel, stream, web}, metrics{predict_time}}.
POST /v1/models/{owner}/{name}/predictions (201), POST /v1/predictions {version}, GET /v1/predictions/{id},
POST /v1/predictions/{id}/cancel. Webhooks POST the prediction, filtered by `webhook_events_filter`, signed as
in https://replicate.com/docs/topics/webhooks/verify-webhook (Standard Webhooks; fakes/signing.py); GET
/v1/webhooks/default/secret answers the signing secret {key}.
Errors are problem details {title, detail, status}. Auth: `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import datetime
import secrets
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
from reelforge_render.fakes.signing import standard_headers

ASPECTS = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
ERRORS = {"content_policy": "NSFW content detected. Try running it again, or try a different prompt.",
          "invalid": "Prediction input failed validation: invalid prompt",
          "error": "Prediction failed for an unknown reason. It might have run out of memory?"}


def error_body(status: int, message: str) -> dict[str, Any]:
    title = {401: "Unauthenticated", 404: "Not found", 422: "Input validation failed",
             429: "Request was throttled"}.get(status, "Error")
    return {"title": title, "detail": message, "status": status}


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def prediction(request: Request, job: FakeJob) -> dict[str, Any]:
    phase, progress = job.phase()
    base = f"{str(request.base_url).rstrip('/')}/v1/predictions/{job.id}"
    body: dict[str, Any] = {
        "id": job.id, "model": job.model, "version": job.extra.get("version", "hidden"),
        "input": job.extra.get("input", {}), "logs": "", "output": None, "data_removed": False, "error": None,
        "status": "starting", "created_at": _iso(job.created_at), "started_at": None, "completed_at": None,
        "urls": {"get": base, "cancel": f"{base}/cancel", "web": f"https://replicate.com/p/{job.id}"},
        "metrics": {},
    }
    if phase == "cancelled":
        body["status"] = "canceled"
    elif phase == "running":
        body.update(status="processing", started_at=_iso(job.created_at + job.queue_s),
                    logs=f"Generating video...\n{progress}%|")
    elif phase == "done":
        body.update(started_at=_iso(job.created_at + job.queue_s), completed_at=_iso(job.created_at + job.latency_s),
                    metrics={"predict_time": job.latency_s, "total_time": job.queue_s + job.latency_s})
        if job.outcome == "ok":
            body.update(status="succeeded", output=cdn_url(request, job), logs="100%|")
        else:
            body.update(status="failed", error=ERRORS.get(job.outcome, ERRORS["error"]))
    return body


def create_app(behaviour: Behaviour | None = None) -> FastAPI:
    app, fake = fake_app(behaviour, error_body)

    def fail(status: int, detail: str) -> JSONResponse:
        return JSONResponse(error_body(status, detail), status_code=status,
                            media_type="application/problem+json")

    async def create(request: Request, model: str, version: str | None) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return fail(400, "Invalid JSON")
        payload = body.get("input")
        if not isinstance(payload, dict) or not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
            return fail(422, "- input: prompt is required")
        size = ASPECTS.get(payload.get("aspect_ratio", "16:9"))
        duration = payload.get("duration", 5)
        if size is None or duration not in (4, 5, 6, 8, 10):
            return fail(422, "- input.aspect_ratio or input.duration: value is not one of the allowed values")
        job, _ = fake.create(payload["prompt"], size[0], size[1], float(duration), model,
                             job_id=secrets.token_hex(13),
                             submission_key=submission_key(request))
        job.extra.update(input=payload, version=version or "hidden")
        webhook = body.get("webhook")
        events = body.get("webhook_events_filter") or ["start", "output", "logs", "completed"]
        if isinstance(webhook, str) and "completed" in events:
            if not fake.behaviour.webhook_url:
                fake.behaviour.webhook_url = webhook
            fake.announce(job, lambda j: prediction(request, j),
                          lambda body: standard_headers(fake.behaviour.webhook_secret, body))
        return JSONResponse(prediction(request, job), status_code=201)

    @app.get("/v1/webhooks/default/secret")
    async def webhook_secret() -> dict[str, str]:
        """The account's signing secret (https://replicate.com/docs/topics/webhooks/verify-webhook)."""
        return {"key": fake.behaviour.webhook_secret}

    @app.post("/v1/models/{owner}/{name}/predictions")
    async def create_for_model(owner: str, name: str, request: Request) -> Response:
        return await create(request, f"{owner}/{name}", None)

    @app.post("/v1/predictions")
    async def create_for_version(request: Request) -> Response:
        return await create(request, "version", "given")

    @app.get("/v1/predictions/{prediction_id}")
    async def get_prediction(prediction_id: str, request: Request) -> Response:
        job = fake.jobs.get(prediction_id)
        if job is None:
            return fail(404, "The requested resource could not be found.")
        fake.stats.polls += 1
        return JSONResponse(prediction(request, job))

    @app.post("/v1/predictions/{prediction_id}/cancel")
    async def cancel_prediction(prediction_id: str, request: Request) -> Response:
        job = fake.jobs.get(prediction_id)
        if job is None:
            return fail(404, "The requested resource could not be found.")
        if job.phase()[0] in ("queued", "running"):
            job.cancelled = True
        fake.stats.cancels += 1
        return JSONResponse(prediction(request, job))

    return app
