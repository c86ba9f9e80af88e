"""OpenAI-shaped Videos API: OpenAI itself, Azure OpenAI, compatible gateways and our self-hosted GPU pool.

API (https://developers.openai.com/api/reference/resources/videos and the guide at
https://developers.openai.com/api/docs/guides/video-generation): POST /videos creates a video job
({id, object: "video", status: queued|in_progress|completed|failed, progress, error{code, message}}),
GET /videos/{id} reads it, GET /videos/{id}/content downloads the MP4, DELETE /videos/{id} deletes it
(the API has no cancel; deleting is how we stop paying attention and free the asset).
`base_url` includes the version prefix, e.g. https://api.openai.com/v1.

Options: `auth` = "bearer" (default) or "api-key" (Azure's header). Our self-hosted pool adds
`usage: {gpus, gpu_seconds}` to the video object; it is reported when present.
The render id goes out as `Idempotency-Key`; gateways and our pool dedupe on it, OpenAI ignores it.
"""

from __future__ import annotations

from pathlib import Path
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
from reelforge_render.providers.http import HttpProvider, ProviderHTTP, body_message

_POLICY_HINTS = ("moderation", "content_policy", "safety", "policy_violation")
_INPUT_HINTS = ("invalid", "unsupported", "too_long", "not_found")


def _code_from_error(error: Any) -> str | None:
    if not isinstance(error, dict):
        return None
    text = f"{error.get('code') or ''} {error.get('type') or ''}".lower()
    if any(hint in text for hint in _POLICY_HINTS):
        return CONTENT_POLICY
    if any(hint in text for hint in _INPUT_HINTS):
        return INVALID_INPUT
    return None


def classify(status: int, body: Any) -> str | None:
    return _code_from_error(body.get("error")) if isinstance(body, dict) and status in (400, 403, 422) else None


class OpenAIVideos(HttpProvider):
    idempotent_submit = True
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.poll_interval = config.poll_interval_seconds
        self._config = config
        key = config.api_key().get_secret_value()
        auth = {"api-key": key} if config.options.get("auth") == "api-key" else {"authorization": f"Bearer {key}"}
        self._http = ProviderHTTP(name, config, auth, classify)

    async def submit(self, job: ProviderJob) -> str:
        spec = job.spec
        body = {
            "model": self._config.provider_model(spec.model),
            "prompt": spec.prompt,
            "seconds": str(max(1, round(spec.seconds))),
            "size": f"{spec.width}x{spec.height}",
        }
        video = await self._http.json("POST", "videos", json=body, headers=self.submission_headers(job))
        video_id = self._required_id(video, "id", "create")
        return video_id

    async def status(self, job: ProviderJob) -> JobStatus:
        video = await self._http.json("GET", f"videos/{job.external_id}")
        state = video.get("status")
        progress = int(video.get("progress") or 0)
        if state == "completed":
            return JobStatus("succeeded", 100, cost=self._cost(job, video))
        if state == "failed":
            error = video.get("error") or {}
            code = _code_from_error(error) or INTERNAL
            message = f"{self.name}: {body_message(video) or 'failed'}"
            return JobStatus("failed", progress, error=ProviderError(code, message))
        if state == "in_progress":
            return JobStatus("running", progress)
        if state == "queued":
            return JobStatus("queued", progress)
        raise ProviderError(INTERNAL, f"{self.name}: unknown video status {state!r}")

    def webhook_subject(self, body: Any) -> str | None:
        """OpenAI's `video.completed` / `video.failed` events name the video in `data.id`
        (https://platform.openai.com/docs/guides/webhooks)."""
        data = body.get("data") if isinstance(body, dict) else None
        return data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None

    def webhook_status(self, job: ProviderJob, body: Any) -> JobStatus | None:
        return None  # the event carries no state: the tracker polls at once

    def _cost(self, job: ProviderJob, video: dict[str, Any]) -> Cost:
        seconds = float(video.get("seconds") or job.spec.seconds)
        usage = video.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return Cost(
            micros=round(seconds * self._config.price_micros_per_second),
            gpus=int(usage.get("gpus") or 0),
            gpu_seconds=float(usage.get("gpu_seconds") or 0.0),
        )

    async def cancel(self, job: ProviderJob) -> None:
        if job.external_id:
            await self._http.request("DELETE", f"videos/{job.external_id}")

    async def fetch_output(self, job: ProviderJob, status: JobStatus, out_path: Path) -> None:
        await self._http.download(f"videos/{job.external_id}/content?variant=video", out_path)


def create(name: str, config: ProviderConfig) -> OpenAIVideos:
    return OpenAIVideos(name, config)
