"""POST /v1/provider-webhooks/{provider}: render providers' webhook deliveries.

Not a partner route (no API key, not in the OpenAPI document): a delivery is trusted only once its
provider's signature verifies (provider_webhooks.py). Verified deliveries go, in one transaction with
their replay record, to the outbox and from there to `render.v1.provider-event`, where the render adapter
reads them like a status poll answer. A delivery seen before (same provider and delivery id) is
acknowledged and changes nothing; a delivery for a render we no longer track is the adapter's to ignore.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
from fastapi import APIRouter, Request, Response

from reelforge.render.v1 import render_pb2
from reelforge_core import outbox, topics
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.provider_webhooks import MAX_BODY_BYTES, Refused, Verifier, build_verifier
from reelforge_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
REPLAY_CONSUMER = "provider-webhooks"


def body_limits(settings: GatewaySettings) -> dict[str, int]:
    """Per-path body limits for the BodySizeLimit middleware (provider results can exceed the API's limit)."""
    return {f"/v1/provider-webhooks/{name}": MAX_BODY_BYTES for name in settings.provider_webhooks}


def build_verifiers(settings: GatewaySettings, client: httpx.AsyncClient) -> dict[str, Verifier]:
    return {name: build_verifier(config, client) for name, config in settings.provider_webhooks.items()}


@router.post("/v1/provider-webhooks/{provider}", status_code=202)
async def provider_webhook(provider: str, request: Request) -> Response:
    verifier: Verifier | None = request.app.state.provider_verifiers.get(provider)
    if verifier is None:
        raise Problem(404, "provider_not_found", "No webhooks are configured for this provider")
    body = await request.body()
    try:
        delivery_id = await verifier.verify(request.headers, body)
    except Refused as refused:
        log.warning("provider webhook refused", extra={"provider": provider, "code": refused.code,
                                                            "detail": refused.detail})
        raise Problem(refused.status, refused.code, "The webhook delivery was refused", refused.detail) from None
    try:
        json.loads(body)
    except ValueError:
        raise Problem(400, "malformed_json", "The request body is not valid JSON") from None
    event = render_pb2.ProviderEvent(provider=provider, delivery_id=delivery_id, body=body,
                                     received_at_unix=int(time.time()))
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        if await outbox.mark_processed(conn, REPLAY_CONSUMER, f"{provider}:{delivery_id}"[:500]):
            await outbox.enqueue(conn, topics.RENDER_PROVIDER_EVENT, f"{provider}:{delivery_id}", event)
        else:
            log.info("provider webhook replayed; acknowledged once more", extra={"provider": provider})
    return Response(status_code=202)
