"""Replicate predictions: create, get, cancel, with webhooks filtered to the events we use.

API: https://replicate.com/docs/reference/http (create a prediction on an official model with
POST /v1/models/{owner}/{name}/predictions, or on a version with POST /v1/predictions {version}; GET
/v1/predictions/{id}; POST /v1/predictions/{id}/cancel; status starting|processing|succeeded|failed|canceled;
webhooks with `webhook_events_filter`, https://replicate.com/docs/topics/webhooks/setup-webhook). Errors are
problem details {title, detail, status}. Safety failures read like "NSFW content detected" or "(E005) ...
flagged as sensitive"; we map them to content_policy. Option `bill_by`: "predict_time" charges
`price_micros_per_second` per second of GPU time (metrics.predict_time) instead of per output second.
No idempotency key exists; the tracker's submission record keeps a submit whose outcome is unknown from
being repeated.
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
from reelforge_render.providers.http import HttpProvider, ProviderHTTP

_SAFETY = re.compile(r"nsfw|sensitive|e005|safety|content policy", re.IGNORECASE)
_PERCENT = re.compile(r"(\d{1,3})%")


def error_code(message: str) -> str:
    if _SAFETY.search(message):
        return CONTENT_POLICY
    if "invalid" in message.lower():
        return INVALID_INPUT
    return INTERNAL


class Replicate(HttpProvider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.poll_interval = config.poll_interval_seconds
        self._config = config
        self._http = ProviderHTTP(name, config, {"authorization": f"Bearer {config.api_key().get_secret_value()}"})

    async def submit(self, job: ProviderJob) -> str:
        spec = job.spec
        model = self._config.provider_model(spec.model)
        aspect = "16:9" if spec.width > spec.height else "9:16" if spec.height > spec.width else "1:1"
        body: dict[str, Any] = {"input": {"prompt": spec.prompt, "aspect_ratio": aspect,
                                          "duration": max(1, round(spec.seconds))}}
        if spec.seed:
            body["input"]["seed"] = spec.seed % 2**31
        if self._config.webhook_url:
            body["webhook"] = self._config.webhook_url
            body["webhook_events_filter"] = ["completed"]
        if ":" in model:  # owner/name:version
            body["version"] = model.split(":", 1)[1]
            path = "v1/predictions"
        else:
            path = f"v1/models/{model}/predictions"
        prediction = await self._http.json("POST", path, json=body, headers=self.submission_headers(job))
        prediction_id = self._required_id(prediction, "id", "create")
        return prediction_id

    async def status(self, job: ProviderJob) -> JobStatus:
        prediction = await self._http.json("GET", f"v1/predictions/{job.external_id}")
        return self._status(job, prediction)

    def webhook_subject(self, body: Any) -> str | None:
        return body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None

    def webhook_status(self, job: ProviderJob, body: Any) -> JobStatus | None:
        """A webhook delivers the prediction object itself (https://replicate.com/docs/topics/webhooks)."""
        return self._status(job, body) if isinstance(body, dict) else None

    def _status(self, job: ProviderJob, prediction: dict[str, Any]) -> JobStatus:
        state = prediction.get("status")
        if state == "starting":
            return JobStatus("queued", 0)
        if state == "processing":
            percents = _PERCENT.findall(str(prediction.get("logs") or ""))
            return JobStatus("running", min(99, int(percents[-1])) if percents else 0)
        if state == "succeeded":
            output = prediction.get("output")
            url = output[0] if isinstance(output, list) and output else output
            if not isinstance(url, str) or not url:
                return JobStatus("failed", error=ProviderError(INTERNAL, f"{self.name}: succeeded without output"))
            return JobStatus("succeeded", 100, output_url=url, cost=self._cost(job, prediction))
        if state == "failed":
            message = str(prediction.get("error") or "failed")
            return JobStatus("failed", error=ProviderError(error_code(message), f"{self.name}: {message[:300]}"))
        if state == "canceled":
            return JobStatus("cancelled")
        raise ProviderError(INTERNAL, f"{self.name}: unknown prediction status {state!r}")

    def _cost(self, job: ProviderJob, prediction: dict[str, Any]) -> Cost:
        if self._config.options.get("bill_by") == "predict_time":
            predict_time = float((prediction.get("metrics") or {}).get("predict_time") or 0)
            return Cost(micros=round(predict_time * self._config.price_micros_per_second))
        return Cost(micros=max(1, round(job.spec.seconds)) * self._config.price_micros_per_second)

    async def cancel(self, job: ProviderJob) -> None:
        if job.external_id:
            await self._http.request("POST", f"v1/predictions/{job.external_id}/cancel")


def create(name: str, config: ProviderConfig) -> Replicate:
    return Replicate(name, config)
