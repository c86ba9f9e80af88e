"""fal queue API: submit to queue.fal.run, poll status (with queue position), fetch the result, cancel.

API: https://docs.fal.ai/documentation/model-apis/inference/queue (shapes in fakes/fal.py). `base_url` is
https://queue.fal.run; the job's model maps to a fal endpoint id such as `fal-ai/veo3` (config `models`).
Status and result live under the app id (owner/app, without the endpoint's sub-path). The key goes as
`Authorization: Key <key>`. When `webhook_url` is configured it is passed as `fal_webhook` (the gateway verifies
the delivery; its body is read in place of the next poll). fal has no idempotency key: the tracker's
submission record keeps a submit whose outcome is unknown from being repeated.
"""

from __future__ import annotations

from typing import Any

from reelforge_render.providers.base import (
    CONTENT_POLICY,
    INTERNAL,
    INVALID_INPUT,
    RATE_LIMITED,
    Cost,
    JobStatus,
    ProviderError,
    ProviderJob,
)
from reelforge_render.providers.config import ProviderConfig
from reelforge_render.providers.http import HttpProvider, ProviderHTTP


def classify(status: int, body: Any) -> str | None:
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and any(
            isinstance(item, dict) and "content_policy" in str(item.get("type", "")) for item in detail):
        return CONTENT_POLICY
    return None


class FalQueue(HttpProvider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.poll_interval = config.poll_interval_seconds
        self._config = config
        self._http = ProviderHTTP(name, config, {"authorization": f"Key {config.api_key().get_secret_value()}"},
                                  classify)

    def _endpoint(self, job: ProviderJob) -> str:
        return self._config.provider_model(job.spec.model).strip("/")

    def _app(self, job: ProviderJob) -> str:
        return "/".join(self._endpoint(job).split("/")[:2])

    async def submit(self, job: ProviderJob) -> str:
        spec = job.spec
        aspect = "16:9" if spec.width > spec.height else "9:16" if spec.height > spec.width else "1:1"
        body: dict[str, Any] = {"prompt": spec.prompt, "aspect_ratio": aspect,
                                "duration": f"{max(1, round(spec.seconds))}s"}
        if spec.seed:
            body["seed"] = spec.seed % 2**32
        params = {"fal_webhook": self._config.webhook_url} if self._config.webhook_url else None
        queued = await self._http.json("POST", self._endpoint(job), json=body, params=params,
                                         headers=self.submission_headers(job))
        request_id = self._required_id(queued, "request_id", "submit")
        return request_id

    async def status(self, job: ProviderJob) -> JobStatus:
        base = f"{self._app(job)}/requests/{job.external_id}"
        status = await self._http.json("GET", f"{base}/status", params={"logs": "0"})
        state = status.get("status")
        if state == "IN_QUEUE":
            return JobStatus("queued", 0, queue_position=status.get("queue_position"))
        if state == "IN_PROGRESS":
            return JobStatus("running", 0)
        if state != "COMPLETED":
            raise ProviderError(INTERNAL, f"{self.name}: unknown queue status {state!r}")
        try:
            result = await self._http.json("GET", base)
        except ProviderError as exc:
            if exc.code == RATE_LIMITED:
                raise
            # A completed request whose result is an error: the model failed it.
            code = exc.code if exc.code in (CONTENT_POLICY, INVALID_INPUT) else INTERNAL
            return JobStatus("failed", error=ProviderError(code, exc.message))
        return self._completed(job, result)

    def webhook_subject(self, body: Any) -> str | None:
        return body.get("request_id") if isinstance(body, dict) and isinstance(body.get("request_id"), str) else None

    def webhook_status(self, job: ProviderJob, body: Any) -> JobStatus | None:
        """fal's webhook: {request_id, gateway_request_id, status: OK|ERROR, payload (the result, or the error
        details), error?, payload_error?} (https://docs.fal.ai/model-apis/model-endpoints/webhooks)."""
        if not isinstance(body, dict):
            return None
        payload = body.get("payload")
        if body.get("status") == "OK":
            return self._completed(job, payload) if isinstance(payload, dict) else None  # payload_error: poll
        if body.get("status") == "ERROR":
            code = (classify(422, payload) or INTERNAL) if isinstance(payload, dict) else INTERNAL
            if code == INTERNAL and isinstance(payload, dict) and isinstance(payload.get("detail"), list):
                code = INVALID_INPUT  # a validation error list, like the 422 a result read answers
            message = str(body.get("error") or "failed")[:300]
            return JobStatus("failed", error=ProviderError(code, f"{self.name}: {message}"))
        return None

    def _completed(self, job: ProviderJob, result: Any) -> JobStatus:
        url = (result.get("video") or {}).get("url") if isinstance(result, dict) else None
        if not url:
            return JobStatus("failed", error=ProviderError(INTERNAL, f"{self.name}: result without a video"))
        seconds = max(1, round(job.spec.seconds))
        return JobStatus("succeeded", 100, output_url=str(url),
                         cost=Cost(micros=seconds * self._config.price_micros_per_second))

    async def cancel(self, job: ProviderJob) -> None:
        if not job.external_id:
            return
        try:
            await self._http.request("PUT", f"{self._app(job)}/requests/{job.external_id}/cancel")
        except ProviderError as exc:
            if exc.code != INVALID_INPUT:  # 400 ALREADY_COMPLETED / 404: nothing left to cancel
                raise


def create(name: str, config: ProviderConfig) -> FalQueue:
    return FalQueue(name, config)
