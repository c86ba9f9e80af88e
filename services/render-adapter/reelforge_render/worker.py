"""Consumes render requests, renders through the chosen provider, stores the output, reports the result.

Idempotent by render id: a request already answered is skipped; one interrupted mid-render (crash)
is redelivered and rendered again, and the content store dedupes identical output.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import asyncpg

from reelforge.render.v1 import render_pb2
from reelforge_core import media, outbox, topics
from reelforge_core.content import ContentStore
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_render.providers.base import INVALID_INPUT, Provider, ProviderError

log = logging.getLogger(__name__)
CONSUMER = "render-adapter"


class RenderWorker:
    def __init__(self, pool: asyncpg.Pool, content: ContentStore, providers: dict[str, Provider]) -> None:
        self._pool = pool
        self._content = content
        self._providers = providers

    async def handle(self, event: Event) -> None:
        request = event.parse(render_pb2.RenderRequested)
        if not request.render_id or not request.job_id:
            raise PoisonMessage("RenderRequested without render_id or job_id")
        async with self._pool.acquire() as conn:
            if await outbox.already_processed(conn, CONSUMER, request.render_id):
                log.info("render already answered; skipping", extra={"render_id": request.render_id})
                return
            await conn.execute(
                "INSERT INTO render_attempts (render_id, job_id, provider) VALUES ($1, $2, $3)"
                " ON CONFLICT (render_id) DO UPDATE SET starts = render_attempts.starts + 1, started_at = now()",
                request.render_id, request.job_id, request.provider,
            )
        result = await self._render(request)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await outbox.mark_processed(conn, CONSUMER, request.render_id):
                return
            await outbox.enqueue(conn, topics.RENDER_RESULT, request.job_id, result, request.tenant_id)

    async def _render(self, request: render_pb2.RenderRequested) -> render_pb2.RenderResult:
        result = render_pb2.RenderResult(render_id=request.render_id, job_id=request.job_id,
                                         tenant_id=request.tenant_id)
        provider = self._providers.get(request.provider)
        started = time.perf_counter()
        try:
            if provider is None:
                raise ProviderError(INVALID_INPUT, f"unknown provider {request.provider!r}")
            with tempfile.TemporaryDirectory(dir=self._content.scratch_dir()) as scratch:
                out = Path(scratch) / "render.mp4"
                await provider.render(request.render_id, request.spec, out)
                probed = await media.probe(out)
                stored = self._content.put(out)
        except ProviderError as exc:
            result.ok = False
            result.error_code, result.error_message, result.retriable = exc.code, exc.message, exc.retriable
            log.warning("render failed", extra={"error_code": exc.code, "error_message": exc.message})
            return result
        result.ok = True
        result.output_uri, result.sha256 = stored.uri, stored.sha256
        result.output_seconds = probed.duration_s
        result.render_seconds = time.perf_counter() - started
        log.info("render done", extra={"render_seconds": round(result.render_seconds, 3), "uri": stored.uri})
        return result
