"""Kafka handlers: accept render requests durably and hand them to the tracker; relay cancels and
provider webhooks (verified by the gateway) to the tracker.

Neither handler waits for a render: accepting is one INSERT, so the consumer loop stays fast however
many renders are in flight. Idempotent by render id: a redelivered request finds its row and is
skipped; a request whose provider is unknown is answered at once (invalid_input, not retriable).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import asyncpg

from reelforge.render.v1 import render_pb2
from reelforge_core import outbox, telemetry, topics
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_render import store
from reelforge_render.providers.base import INVALID_INPUT, Provider
from reelforge_render.store import CONSUMER
from reelforge_render.tracker import Tracker

log = logging.getLogger(__name__)

__all__ = ["CONSUMER", "RenderWorker"]


class RenderWorker:
    def __init__(self, pool: asyncpg.Pool, providers: Mapping[str, Provider], tracker: Tracker,
                 timeouts: Mapping[str, float], default_timeout: float) -> None:
        self._pool = pool
        self._providers = providers
        self._tracker = tracker
        self._timeouts = timeouts
        self._default_timeout = default_timeout

    async def handle(self, event: Event) -> None:
        if event.topic == topics.RENDER_CANCEL_REQUESTED:
            await self.handle_cancel(event)
            return
        if event.topic == topics.RENDER_PROVIDER_EVENT:
            self.handle_provider_event(event)
            return
        request = event.parse(render_pb2.RenderRequested)
        if not request.render_id or not request.job_id:
            raise PoisonMessage("RenderRequested without render_id or job_id")
        if request.provider not in self._providers:
            async with self._pool.acquire() as conn, conn.transaction():
                await self._reject(conn, request, f"unknown provider {request.provider!r}")
            return
        # One INSERT: a redelivered request (answered or not) finds its row and changes nothing.
        timeout = self._timeouts.get(request.provider, self._default_timeout)
        async with self._pool.acquire() as conn:
            job = await store.accept(conn, request, timeout, telemetry.inject_headers())
        if job is not None:
            self._tracker.track(job)
            log.info("render accepted", extra={"render_id": request.render_id, "provider": request.provider,
                                               "in_flight": len(self._tracker)})

    async def _reject(self, conn: asyncpg.Connection, request: render_pb2.RenderRequested, message: str) -> None:
        result = render_pb2.RenderResult(
            render_id=request.render_id, job_id=request.job_id, tenant_id=request.tenant_id, ok=False,
            error_code=INVALID_INPUT, error_message=message, retriable=False, provider=request.provider,
        )
        if await outbox.mark_processed(conn, CONSUMER, request.render_id):
            await outbox.enqueue(conn, topics.RENDER_RESULT, request.job_id, result, request.tenant_id)
        log.warning("render rejected", extra={"render_id": request.render_id, "error_message": message})

    def handle_provider_event(self, event: Event) -> None:
        """A provider webhook the gateway verified: the tracker reads it in place of the render's next poll.
        Redelivery is harmless (the render has finished and is no longer tracked, or the same state is read
        again). Only the instance that tracks renders acts on it; on another one the poll finds the state."""
        delivery = event.parse(render_pb2.ProviderEvent)
        try:
            body = json.loads(delivery.body)
        except ValueError as exc:
            raise PoisonMessage("ProviderEvent body is not JSON") from exc
        applied = self._tracker.push(delivery.provider, body)
        log.info("provider webhook", extra={"provider": delivery.provider, "delivery_id": delivery.delivery_id[:100],
                                            "applied": applied})

    async def handle_cancel(self, event: Event) -> None:
        cancel = event.parse(render_pb2.RenderCancelRequested)
        if not cancel.render_id:
            raise PoisonMessage("RenderCancelRequested without render_id")
        async with self._pool.acquire() as conn:
            in_flight = await store.request_cancel(conn, cancel.render_id)
        if in_flight:
            self._tracker.request_cancel(cancel.render_id)
        log.info("render cancel requested", extra={"render_id": cancel.render_id, "in_flight": in_flight})
