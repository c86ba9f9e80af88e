"""Runway: POST /v1/text_to_video (or /v1/image_to_video), poll GET /v1/tasks/{id}, DELETE to cancel.

API: https://docs.dev.runwayml.com/api/ (shapes in fakes/runway.py). `base_url` is
https://api.dev.runwayml.com; options: `api_version` (default 2024-11-06), `endpoint` (text_to_video).
Runway has no idempotency key; the tracker's submission record keeps a submit whose outcome is unknown
from being repeated. Failure codes starting with SAFETY are content policy; ASSET/INPUT are input.
Outputs are CDN URLs, fetched without credentials through the SSRF guard.
"""

from __future__ import annotations

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
from reelforge_render.providers.http import HttpProvider, ProviderHTTP

API_VERSION = "2024-11-06"


def failure_code(code: str) -> str:
    if "SAFETY" in code:
        return CONTENT_POLICY
    if code.startswith(("ASSET", "INPUT")):
        return INVALID_INPUT
    return INTERNAL


class Runway(HttpProvider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.poll_interval = config.poll_interval_seconds
        self._config = config
        headers = {"authorization": f"Bearer {config.api_key().get_secret_value()}",
                   "x-runway-version": config.options.get("api_version", API_VERSION)}
        self._http = ProviderHTTP(name, config, headers)

    async def submit(self, job: ProviderJob) -> str:
        spec = job.spec
        body: dict[str, Any] = {
            "model": self._config.provider_model(spec.model),
            "promptText": spec.prompt[:1000],
            "ratio": f"{spec.width}:{spec.height}",
            "duration": max(1, round(spec.seconds)),
        }
        if spec.seed:
            body["seed"] = spec.seed % 4294967295
        endpoint = self._config.options.get("endpoint", "text_to_video")
        created = await self._http.json("POST", f"v1/{endpoint}", json=body,
                                            headers=self.submission_headers(job))
        task_id = self._required_id(created, "id", "task creation")
        return task_id

    async def status(self, job: ProviderJob) -> JobStatus:
        task = await self._http.json("GET", f"v1/tasks/{job.external_id}")
        state = task.get("status")
        if state in ("PENDING", "THROTTLED"):
            return JobStatus("queued", 0)
        if state == "RUNNING":
            return JobStatus("running", round(100 * float(task.get("progress") or 0)))
        if state == "SUCCEEDED":
            output = task.get("output") or []
            if not output:
                raise ProviderError(INTERNAL, f"{self.name}: task succeeded without output")
            seconds = max(1, round(job.spec.seconds))
            return JobStatus("succeeded", 100, output_url=str(output[0]),
                             cost=Cost(micros=seconds * self._config.price_micros_per_second))
        if state == "FAILED":
            code = failure_code(str(task.get("failureCode") or ""))
            return JobStatus("failed", error=ProviderError(code, f"{self.name}: {task.get('failure') or 'failed'}"))
        if state == "CANCELLED":
            return JobStatus("cancelled")
        raise ProviderError(INTERNAL, f"{self.name}: unknown task status {state!r}")

    async def cancel(self, job: ProviderJob) -> None:
        if job.external_id:
            await self._http.request("DELETE", f"v1/tasks/{job.external_id}")


def create(name: str, config: ProviderConfig) -> Runway:
    return Runway(name, config)
