"""Fake Google Veo on Vertex AI, with the bit of Cloud Storage its outputs land in.

Sources: Vertex AI Veo API reference
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/veo-video-generation and the guide
https://cloud.google.com/vertex-ai/generative-ai/docs/video/generate-videos-from-text; the wire models in
https://docs.rs/gproxy-protocol/latest/gproxy_protocol/protocol/gemini/video/ (VeoMedia: inline or
GCS-referenced video). POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning
{instances[{prompt}], parameters{aspectRatio, durationSeconds, resolution, sampleCount, storageUri?, seed}}
-> {name: "projects/{p}/locations/{l}/publishers/google/models/{m}/operations/{id}"}; POST
.../models/{m}:fetchPredictOperation {operationName} -> the operation {name, done, response{@type,
raiMediaFilteredCount, raiMediaFilteredReasons?, videos[{gcsUri | bytesBase64Encoded, mimeType}]}, error}.
With `storageUri` the video is written to Cloud Storage (gcsUri; read back with the JSON API's media
download GET /download/storage/v1/b/{bucket}/o/{object}?alt=media), without it it comes inline.
POST /v1/{operation name}:cancel cancels. Auth: `Authorization: Bearer <OAuth access token>`.
Errors: google.rpc.Status {"error": {code, message, status}} as in the Gemini API.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from reelforge_render.fakes.common import Behaviour, FakeJob, FakeProvider, fake_app
from reelforge_render.fakes.veo import create_job, error_body, failure

RESPONSE_TYPE = "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
MODELS = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"


def _gcs_object(job: FakeJob) -> tuple[str, str]:
    bucket, _, prefix = str(job.extra["parameters"]["storageUri"]).removeprefix("gs://").partition("/")
    return bucket, f"{prefix.rstrip('/') + '/' if prefix else ''}{job.id}/sample_0.mp4"


async def operation(fake: FakeProvider, job: FakeJob, name: str) -> dict[str, Any]:
    if job.phase()[0] in ("queued", "running"):
        return {"name": name}
    body: dict[str, Any] = {"name": name, "done": True}
    if job.succeeded:
        if job.extra["parameters"].get("storageUri"):
            bucket, obj = _gcs_object(job)
            video: dict[str, Any] = {"gcsUri": f"gs://{bucket}/{obj}", "mimeType": "video/mp4"}
        else:
            encoded = base64.b64encode(await fake.video(job, counted=False)).decode()
            video = {"bytesBase64Encoded": encoded, "mimeType": "video/mp4"}
        body["response"] = {"@type": RESPONSE_TYPE, "raiMediaFilteredCount": 0, "videos": [video]}
        return body
    failed = failure(job)
    if "error" in failed:
        body["error"] = failed["error"]
    else:
        body["response"] = {"@type": RESPONSE_TYPE, **failed}
    return body


def create_app(behaviour: Behaviour | None = None) -> FastAPI:
    app, fake = fake_app(behaviour, error_body)

    def fail(status: int, message: str) -> JSONResponse:
        return JSONResponse(error_body(status, message), status_code=status)

    @app.post(MODELS + ":predictLongRunning")
    async def predict_long_running(project: str, location: str, model: str, request: Request) -> Response:
        job = await create_job(fake, model, request)
        if isinstance(job, Response):
            return job
        job.extra["name"] = f"projects/{project}/locations/{location}/publishers/google/models/{model}" \
                            f"/operations/{job.id}"
        return JSONResponse({"name": job.extra["name"]})

    def find(name: object) -> FakeJob | None:
        job = fake.jobs.get(str(name).rsplit("/", 1)[-1]) if isinstance(name, str) else None
        return job if job is not None and job.extra.get("name") == name else None

    @app.post(MODELS + ":fetchPredictOperation")
    async def fetch_predict_operation(project: str, location: str, model: str, request: Request) -> Response:
        try:
            name = (await request.json()).get("operationName")
        except (ValueError, AttributeError):
            return fail(400, "Invalid JSON payload received.")
        job = find(name)
        if job is None:
            return fail(404, f"Operation {name} not found.")
        fake.stats.polls += 1
        return JSONResponse(await operation(fake, job, str(name)))

    @app.post("/v1/{name:path}:cancel")
    async def cancel(name: str) -> Response:
        job = find(name)
        if job is None:
            return fail(404, f"Operation {name} not found.")
        if job.phase()[0] in ("queued", "running"):
            job.cancelled = True
        fake.stats.cancels += 1
        return JSONResponse({})

    @app.get("/download/storage/v1/b/{bucket}/o/{obj:path}")
    async def gcs_media(bucket: str, obj: str, alt: str = "") -> Response:
        wanted = (bucket, unquote(obj))
        job = next((j for j in fake.jobs.values() if j.succeeded and j.extra["parameters"].get("storageUri")
                    and _gcs_object(j) == wanted), None)
        if job is None or alt != "media":
            return fail(404, "No such object.")
        return Response(await fake.video(job), media_type="video/mp4")

    return app
