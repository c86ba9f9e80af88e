"""Fake Google Veo through the Gemini API (long-running operations).

Sources: Gemini API video guide https://ai.google.dev/gemini-api/docs/video and the wire models in
https://docs.rs/gproxy-protocol/latest/gproxy_protocol/protocol/gemini/video/ (PredictLongRunning request
{instances[{prompt, image?}], parameters{aspectRatio, durationSeconds, resolution, negativePrompt, seed}};
google.longrunning.Operation {name, done, response{@type, generateVideoResponse{generatedSamples[{video{uri}}],
raiMediaFilteredCount, raiMediaFilteredReasons}}, error{code, message}}). Auth: `x-goog-api-key`.
Errors: {"error": {code, message, status}} (google.rpc.Status; 429 is RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from reelforge_render.fakes.common import Behaviour, FakeJob, FakeProvider, install_common, submission_key

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
SIZES = {("16:9", "720p"): (1280, 720), ("9:16", "720p"): (720, 1280),
         ("16:9", "1080p"): (1920, 1080), ("9:16", "1080p"): (1080, 1920)}
DURATIONS = (4, 6, 8)
RESPONSE_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": STATUS.get(status, "UNKNOWN")}}


def operation(request: Request, job: FakeJob) -> dict[str, Any]:
    name = f"models/{job.model}/operations/{job.id}"
    phase, _ = job.phase()
    if phase in ("queued", "running"):
        return {"name": name}
    body: dict[str, Any] = {"name": name, "done": True}
    if phase != "cancelled" and job.outcome == "ok":
        uri = f"{str(request.base_url).rstrip('/')}/v1beta/files/{job.id}:download?alt=media"
        body["response"] = {"@type": RESPONSE_TYPE,
                            "generateVideoResponse": {"generatedSamples": [{"video": {"uri": uri}}]}}
        return body
    failed = failure(job)
    if "error" in failed:
        body["error"] = failed["error"]
    else:
        body["response"] = {"@type": RESPONSE_TYPE, "generateVideoResponse": failed}
    return body


async def create_job(fake: FakeProvider, model: str, request: Request) -> FakeJob | JSONResponse:
    """A job for a :predictLongRunning request (both API forms take the same body), or the 400 answer."""
    def fail(message: str) -> JSONResponse:
        return JSONResponse(error_body(400, message), status_code=400)
    try:
        body = await request.json()
        instance = body["instances"][0]
        parameters = body.get("parameters") or {}
    except (ValueError, KeyError, IndexError, TypeError):
        return fail("Invalid JSON payload received.")
    prompt = instance.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return fail("A prompt is required.")
    size = SIZES.get((parameters.get("aspectRatio", "16:9"), parameters.get("resolution", "720p")))
    if size is None:
        return fail("Unsupported aspectRatio or resolution.")
    duration = parameters.get("durationSeconds", 8)
    if duration not in DURATIONS:
        return fail(f"durationSeconds must be one of {DURATIONS}, got {duration}.")
    job, _ = fake.create(prompt, size[0], size[1], float(duration), model, job_id=uuid.uuid4().hex[:12],
                         submission_key=submission_key(request))
    job.extra["parameters"] = parameters
    return job


def failure(job: FakeJob) -> dict[str, Any]:
    """What a done operation that produced no video carries (shared by both API forms)."""
    if job.cancelled:
        return {"error": {"code": 1, "message": "Operation cancelled."}}
    if job.outcome == "content_policy":
        return {"raiMediaFilteredCount": 1,
                "raiMediaFilteredReasons": ["The video could not be generated because it may violate our policies."]}
    if job.outcome == "invalid":
        return {"error": {"code": 3, "message": "The prompt could not be processed."}}
    return {"error": {"code": 13, "message": "Video generation failed due to an internal error."}}


def create_app(behaviour: Behaviour | None = None) -> FastAPI:
    fake = FakeProvider(behaviour)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.fake = fake
    install_common(app, fake, error_body,
                   lambda r: r.headers.get("x-goog-api-key") == fake.behaviour.api_key
                   or r.query_params.get("key") == fake.behaviour.api_key)

    def fail(status: int, message: str) -> JSONResponse:
        return JSONResponse(error_body(status, message), status_code=status)

    @app.post("/v1beta/models/{model}:predictLongRunning")
    async def predict_long_running(model: str, request: Request) -> Response:
        job = await create_job(fake, model, request)
        return job if isinstance(job, Response) else JSONResponse(operation(request, job))

    @app.get("/v1beta/models/{model}/operations/{op_id}")
    async def get_operation(model: str, op_id: str, request: Request) -> Response:
        job = fake.jobs.get(op_id)
        if job is None:
            return fail(404, f"Operation models/{model}/operations/{op_id} not found.")
        fake.stats.polls += 1
        return JSONResponse(operation(request, job))

    @app.post("/v1beta/models/{model}/operations/{op_id}:cancel")
    async def cancel_operation(model: str, op_id: str) -> Response:
        job = fake.jobs.get(op_id)
        if job is None:
            return fail(404, f"Operation models/{model}/operations/{op_id} not found.")
        if job.phase()[0] in ("queued", "running"):
            job.cancelled = True
        fake.stats.cancels += 1
        return JSONResponse({})

    @app.get("/v1beta/files/{file_id}:download")
    async def download(file_id: str) -> Response:
        job = fake.jobs.get(file_id)
        if job is None or not job.succeeded:
            return fail(404, "File not found.")
        return Response(await fake.video(job), media_type="video/mp4")

    return app
