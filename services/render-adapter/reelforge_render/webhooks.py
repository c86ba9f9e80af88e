"""Provider webhooks: POST /v1/provider-webhooks/{provider}.

A webhook body is never trusted as a result: it only moves the named job's next status poll to now,
and the poll (authenticated, to the provider's own API) decides. So a forged or replayed call costs
at most one extra poll, and providers that cannot sign their callbacks are as safe as those that do.
Bodies are size-limited; unknown jobs are acknowledged (202) so providers don't retry forever.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from reelforge_render.tracker import Tracker

MAX_BODY_BYTES = 256 * 1024


def external_ids(body: Any) -> list[str]:
    """Candidate job ids in the shapes providers send: OpenAI (`data.id`), fal (`request_id`), Replicate
    (`id`), WaveSpeedAI (`id` / `data.id`), Google operations (`name`)."""
    ids: list[str] = []
    if isinstance(body, dict):
        for key in ("id", "request_id", "name", "gateway_request_id"):
            if isinstance(body.get(key), str):
                ids.append(body[key])
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            ids.append(data["id"])
    return ids


def webhook_router(tracker: Tracker) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/provider-webhooks/{provider}", status_code=202)
    async def provider_webhook(provider: str, request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return Response(status_code=413)
        try:
            body = json.loads(raw)
        except ValueError:
            return Response(status_code=400)
        for external_id in external_ids(body):
            if tracker.nudge(provider, external_id):
                break
        return Response(status_code=202)

    return router
