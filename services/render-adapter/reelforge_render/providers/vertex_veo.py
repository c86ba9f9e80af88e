"""Google Veo through Vertex AI: publishers/google/models/{model}:predictLongRunning, then :fetchPredictOperation.

API: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/veo-video-generation (shapes in
fakes/vertex_veo.py). `base_url` is https://{location}-aiplatform.googleapis.com; options `project` and
`location` (default us-central1) name the model's path, `storage_uri` (optional, gs://bucket/prefix/) makes
Vertex write the video to Cloud Storage instead of returning it inline as `bytesBase64Encoded`, and
`gcs_base_url` (default https://storage.googleapis.com) is where gs:// objects are downloaded from, with
our credentials. Auth is an OAuth access token (`api_key_env` / `api_key_file`), re-read while running so
a refreshed token file is picked up. Request, operation states and error mapping are Gemini Veo's (veo.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from typing import Any
from urllib.parse import quote

from reelforge_render.providers.base import INTERNAL, JobStatus, ProviderError, ProviderJob
from reelforge_render.providers.config import ProviderConfig
from reelforge_render.providers.http import ProviderHTTP, RefreshingBearer
from reelforge_render.providers.veo import VeoOperations, classify, predict_request

INLINE = "inline:bytesBase64Encoded"  # status marker: the video rides in the operation itself


class VertexVeo(VeoOperations):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.poll_interval = config.poll_interval_seconds
        self._config = config
        project = config.options.get("project")
        if not project:
            raise ValueError(f"provider {name!r}: option 'project' is required for Vertex AI")
        location = config.options.get("location", "us-central1")
        self._models = f"v1/projects/{project}/locations/{location}/publishers/google/models"
        self._storage_uri = config.options.get("storage_uri", "")
        self._gcs = config.options.get("gcs_base_url", "https://storage.googleapis.com").rstrip("/")
        self._http = ProviderHTTP(name, config, {}, classify, auth=RefreshingBearer(config),
                                  trusted_origins=[self._gcs])

    def _model_path(self, job: ProviderJob) -> str:
        return f"{self._models}/{self._config.provider_model(job.spec.model)}"

    async def submit(self, job: ProviderJob) -> str:
        body = predict_request(job)
        body["parameters"]["sampleCount"] = 1
        if self._storage_uri:
            body["parameters"]["storageUri"] = self._storage_uri
        operation = await self._http.json("POST", f"{self._model_path(job)}:predictLongRunning", json=body,
                                          headers=self.submission_headers(job))
        return self._operation_name(operation)

    async def _operation(self, job: ProviderJob) -> dict[str, Any]:
        operation = await self._http.json("POST", f"{self._model_path(job)}:fetchPredictOperation",
                                          json={"operationName": job.external_id})
        return operation if isinstance(operation, dict) else {}

    async def status(self, job: ProviderJob) -> JobStatus:
        return self._status_of(job, await self._operation(job))

    def _video_url(self, result: dict[str, Any]) -> str | None:
        videos = result.get("videos") or []
        video = videos[0] if videos and isinstance(videos[0], dict) else {}
        if isinstance(video.get("gcsUri"), str) and video["gcsUri"].startswith("gs://"):
            return str(video["gcsUri"])
        return INLINE if video.get("bytesBase64Encoded") else None

    async def fetch_output(self, job: ProviderJob, status: JobStatus, out_path: Path) -> None:
        if status.output_url != INLINE:
            bucket, _, obj = status.output_url.removeprefix("gs://").partition("/")
            url = f"{self._gcs}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}?alt=media"
            await self._http.download(url, out_path)
            return
        # Inline output: read the operation again rather than holding every finished video in memory.
        encoded = ((await self._operation(job)).get("response") or {}).get("videos", [{}])[0].get(
            "bytesBase64Encoded", "")
        limit = self._config.max_output_bytes
        if len(encoded) * 3 // 4 > limit:
            raise ProviderError(INTERNAL, f"{self.name}: output exceeds {limit} bytes")
        try:
            video = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProviderError(INTERNAL, f"{self.name}: output is not valid base64") from exc
        if not video:
            raise ProviderError(INTERNAL, f"{self.name}: empty output")
        await asyncio.to_thread(out_path.write_bytes, video)

    async def cancel(self, job: ProviderJob) -> None:
        if job.external_id:
            await self._http.request("POST", f"v1/{job.external_id}:cancel", json={})


def create(name: str, config: ProviderConfig) -> VertexVeo:
    return VertexVeo(name, config)
