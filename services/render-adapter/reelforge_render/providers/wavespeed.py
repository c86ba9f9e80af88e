"""WaveSpeedAI: submit a task to a model route, poll its result, optionally be called back.

API: https://wavespeed.ai/docs/submit-task and https://wavespeed.ai/docs/get-result (shapes in
fakes/wavespeed.py). `base_url` is https://api.wavespeed.ai; the job's model maps to a WaveSpeedAI model id
such as `wavespeed-ai/wan-2.1/t2v-720p` (config `models`). POST /api/v3/{model-id} answers an envelope
{code, message, data: prediction}; GET /api/v3/predictions/{id}/result reads it (created|processing|
completed|failed). The envelope's `code` is checked too, not only the HTTP status. When `webhook_url` is
configured it is passed as the `webhook` query parameter (the gateway verifies the delivery; its
body is read in place of the next poll).
The API has no cancel (cancel is a no-op; the tracker still ends the render) and no idempotency key,
so submissions are guarded by our own submission record (tracker.py).
"""

from __future__ import annotations

import re
from typing import Any

from reelforge_render.providers.base import (
    CONTENT_POLICY,
    INTERNAL,
    INVALID_INPUT,
    Cost,
    JobStatus,
    ProviderError,
    ProviderJob,
)
from reelforge_render.providers.config import ProviderConfig
from reelforge_render.providers.http import HttpProvider, ProviderHTTP, default_code

_SAFETY = re.compile(r"nsfw|sensitive|content policy|safety|moderation", re.IGNORECASE)
_INVALID = re.compile(r"invalid|not supported|must be|required", re.IGNORECASE)


def error_code(message: str) -> str:
    if _SAFETY.search(message):
        return CONTENT_POLICY
    if _INVALID.search(message):
        return INVALID_INPUT
    return INTERNAL


def classify(status: int, body: Any) -> str | None:
    message = str(body.get("message") or "") if isinstance(body, dict) else ""
    return CONTENT_POLICY if status == 400 and _SAFETY.search(message) else None


class WaveSpeed(HttpProvider):
    idempotent_submit = False

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.poll_interval = config.poll_interval_seconds
        self._config = config
        self._http = ProviderHTTP(name, config, {"authorization": f"Bearer {config.api_key().get_secret_value()}"},
                                  classify)

    async def _data(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = await self._http.json(method, path, **kwargs)
        code = answer.get("code", 200) if isinstance(answer, dict) else None
        if not isinstance(code, int) or code >= 400:  # an error envelope inside an HTTP 200
            message = f"{self.name}: {str(answer.get('message') or code)[:300]}" if isinstance(answer, dict) else ""
            status = code if isinstance(code, int) else 500
            raise ProviderError(classify(status, answer) or default_code(status), message or f"{self.name}: bad answer")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise ProviderError(INTERNAL, f"{self.name}: answer without data")
        return data

    async def submit(self, job: ProviderJob) -> str:
        spec = job.spec
        body: dict[str, Any] = {"prompt": spec.prompt, "size": f"{spec.width}*{spec.height}",
                                "duration": max(1, round(spec.seconds))}
        if spec.seed:
            body["seed"] = spec.seed % 2**31
        params = {"webhook": self._config.webhook_url} if self._config.webhook_url else None
        model = self._config.provider_model(spec.model).strip("/")
        data = await self._data("POST", f"api/v3/{model}", json=body, params=params,
                                headers=self.submission_headers(job))
        return self._required_id(data, "id", "submit")

    async def status(self, job: ProviderJob) -> JobStatus:
        data = await self._data("GET", f"api/v3/predictions/{job.external_id}/result")
        return self._status(job, data)

    def webhook_subject(self, body: Any) -> str | None:
        return body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None

    def webhook_status(self, job: ProviderJob, body: Any) -> JobStatus | None:
        """A webhook delivers the prediction object (https://wavespeed.ai/docs-api/webhooks)."""
        return self._status(job, body) if isinstance(body, dict) else None

    def _status(self, job: ProviderJob, data: dict[str, Any]) -> JobStatus:
        state = data.get("status")
        if state == "created":
            return JobStatus("queued", 0)
        if state == "processing":
            return JobStatus("running", 0)
        if state == "failed":
            message = str(data.get("error") or "failed")
            return JobStatus("failed", error=ProviderError(error_code(message), f"{self.name}: {message[:300]}"))
        if state != "completed":
            raise ProviderError(INTERNAL, f"{self.name}: unknown prediction status {state!r}")
        outputs = data.get("outputs")
        url = outputs[0] if isinstance(outputs, list) and outputs else None
        if not isinstance(url, str) or not url:
            return JobStatus("failed", error=ProviderError(INTERNAL, f"{self.name}: completed without outputs"))
        if any(flag is True for flag in data.get("has_nsfw_contents") or []):
            return JobStatus("failed", error=ProviderError(CONTENT_POLICY, f"{self.name}: output flagged as NSFW"))
        seconds = max(1, round(job.spec.seconds))
        return JobStatus("succeeded", 100, output_url=url,
                         cost=Cost(micros=seconds * self._config.price_micros_per_second))

    async def cancel(self, job: ProviderJob) -> None:
        """WaveSpeedAI has no cancel endpoint: the prediction runs out at the provider, we stop watching it."""


def create(name: str, config: ProviderConfig) -> WaveSpeed:
    return WaveSpeed(name, config)
