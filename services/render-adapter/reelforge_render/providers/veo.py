"""Google Veo through the Gemini API: models/{model}:predictLongRunning, then the long-running operation.

API: https://ai.google.dev/gemini-api/docs/video (see fakes/veo.py for the shapes). `base_url` is
https://generativelanguage.googleapis.com; the key goes in `x-goog-api-key`, and the generated sample's URI
(on the same host) is downloaded with it. Veo renders 720p or 1080p at 16:9 or 9:16 for 4, 6 or 8 seconds;
the spec's size picks the aspect ratio and resolution. Content filtered by RAI comes back as a done
operation without samples (`raiMediaFilteredCount`), which we report as content_policy.
The request and operation handling is shared with Vertex AI's form of Veo (providers/vertex_veo.py).
"""

from __future__ import annotations

from typing import Any

from reelforge_render.providers.base import (
    CANCELLED,
    CONTENT_POLICY,
    INTERNAL,
    INVALID_INPUT,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    TIMEOUT,
    Cost,
    JobStatus,
    ProviderError,
    ProviderJob,
)
from reelforge_render.providers.config import ProviderConfig
from reelforge_render.providers.http import HttpProvider, ProviderHTTP

# google.rpc.Code -> our code
RPC_CODES = {1: CANCELLED, 3: INVALID_INPUT, 4: TIMEOUT, 5: INVALID_INPUT, 7: PROVIDER_UNAVAILABLE,
             8: RATE_LIMITED, 9: INVALID_INPUT, 11: INVALID_INPUT, 13: INTERNAL, 14: PROVIDER_UNAVAILABLE}


def classify(status: int, body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message", "")).lower() if isinstance(error, dict) else ""
    if status == 400 and ("safety" in message or "policy" in message):
        return CONTENT_POLICY
    return None


def predict_request(job: ProviderJob) -> dict[str, Any]:
    """The :predictLongRunning body both API forms accept."""
    spec = job.spec
    parameters: dict[str, Any] = {
        "aspectRatio": "9:16" if spec.height > spec.width else "16:9",
        "resolution": "1080p" if min(spec.width, spec.height) >= 1080 else "720p",
        "durationSeconds": max(1, round(spec.seconds)),
    }
    if spec.seed:
        parameters["seed"] = spec.seed % 2**32
    return {"instances": [{"prompt": spec.prompt}], "parameters": parameters}


class VeoOperations(HttpProvider):
    """Veo's long-running operation lifecycle; the API forms differ only in paths, auth and where the video is."""

    _config: ProviderConfig

    def _operation_name(self, operation: Any) -> str:
        name = operation.get("name") if isinstance(operation, dict) else None
        if not isinstance(name, str) or "/operations/" not in name:
            raise ProviderError(INTERNAL, f"{self.name}: predictLongRunning answered without an operation name")
        return name

    def _video_url(self, result: dict[str, Any]) -> str | None:
        """Where the finished operation's video is, or None if it has none."""
        raise NotImplementedError

    def _status_of(self, job: ProviderJob, operation: dict[str, Any]) -> JobStatus:
        if not operation.get("done"):
            return JobStatus("running", 0)
        error = operation.get("error")
        if isinstance(error, dict):
            code = RPC_CODES.get(int(error.get("code") or 13), INTERNAL)
            if code == CANCELLED:
                return JobStatus("cancelled")
            return JobStatus("failed", error=ProviderError(code, f"{self.name}: {error.get('message', 'failed')}"))
        result = operation.get("response") or {}
        url = self._video_url(result)
        if not url:
            reasons = "; ".join(result.get("raiMediaFilteredReasons") or []) or "no video was generated"
            code = CONTENT_POLICY if result.get("raiMediaFilteredCount") else INTERNAL
            return JobStatus("failed", error=ProviderError(code, f"{self.name}: {reasons}"))
        seconds = max(1, round(job.spec.seconds))
        return JobStatus("succeeded", 100, output_url=url,
                         cost=Cost(micros=seconds * self._config.price_micros_per_second))


class GeminiVeo(VeoOperations):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.poll_interval = config.poll_interval_seconds
        self._config = config
        self._http = ProviderHTTP(name, config, {"x-goog-api-key": config.api_key().get_secret_value()}, classify)

    async def submit(self, job: ProviderJob) -> str:
        model = self._config.provider_model(job.spec.model)
        operation = await self._http.json("POST", f"v1beta/models/{model}:predictLongRunning",
                                          json=predict_request(job), headers=self.submission_headers(job))
        return self._operation_name(operation)

    async def status(self, job: ProviderJob) -> JobStatus:
        operation = await self._http.json("GET", f"v1beta/{job.external_id}")
        return self._status_of(job, operation)

    def _video_url(self, result: dict[str, Any]) -> str | None:
        samples = (result.get("generateVideoResponse") or {}).get("generatedSamples") or []
        uri = ((samples[0] if samples else {}).get("video") or {}).get("uri")
        return uri if isinstance(uri, str) and uri else None

    def _status_of(self, job: ProviderJob, operation: dict[str, Any]) -> JobStatus:
        if operation.get("done") and isinstance(operation.get("response"), dict):
            # RAI fields live inside generateVideoResponse in the Gemini form
            inner = operation["response"].get("generateVideoResponse") or {}
            operation = {**operation, "response": {**operation["response"], **inner}}
        return super()._status_of(job, operation)

    async def cancel(self, job: ProviderJob) -> None:
        if job.external_id:
            await self._http.request("POST", f"v1beta/{job.external_id}:cancel", json={})


def create(name: str, config: ProviderConfig) -> GeminiVeo:
    return GeminiVeo(name, config)
