"""Consumes postprocess requests: narration, subtitles, faststart; stores the result and reports it.

Idempotent by job id (one finish per job): a redelivered request that was already answered is skipped.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import asyncpg

from reelforge.postprocess.v1 import postprocess_pb2
from reelforge_core import outbox, topics
from reelforge_core.content import ContentNotFound, ContentStore
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_core.media import MediaError
from reelforge_postprocess.finishing import finish_video

log = logging.getLogger(__name__)
CONSUMER = "postprocess"


class PostprocessWorker:
    def __init__(self, pool: asyncpg.Pool, content: ContentStore, timeout_seconds: float) -> None:
        self._pool = pool
        self._content = content
        self._timeout = timeout_seconds

    async def handle(self, event: Event) -> None:
        request = event.parse(postprocess_pb2.PostprocessRequested)
        if not request.job_id or not request.input_uri:
            raise PoisonMessage("PostprocessRequested without job_id or input_uri")
        async with self._pool.acquire() as conn:
            if await outbox.already_processed(conn, CONSUMER, request.job_id):
                return
        result = await self._finish(request)
        async with self._pool.acquire() as conn, conn.transaction():
            if not await outbox.mark_processed(conn, CONSUMER, request.job_id):
                return
            await conn.execute(
                "INSERT INTO finishes (job_id, input_uri, output_uri, error_code, processing_seconds)"
                " VALUES ($1, $2, $3, $4, $5)",
                request.job_id, request.input_uri, result.output_uri or None, result.error_code or None,
                result.processing_seconds,
            )
            await outbox.enqueue(conn, topics.POSTPROCESS_RESULT, request.job_id, result, request.tenant_id)

    async def _finish(self, request: postprocess_pb2.PostprocessRequested) -> postprocess_pb2.PostprocessResult:
        result = postprocess_pb2.PostprocessResult(job_id=request.job_id, tenant_id=request.tenant_id)
        started = time.perf_counter()
        try:
            source = self._content.path_of(request.input_uri)
            with tempfile.TemporaryDirectory(dir=self._content.scratch_dir()) as scratch:
                out = Path(scratch) / "final.mp4"
                finished = await finish_video(
                    source, out, narration=request.narration or None, voice=request.voice or "en-us",
                    timeout_s=self._timeout,
                )
                stored = self._content.put(out)
        except ContentNotFound as exc:
            result.ok, result.error_code, result.error_message = False, "input_missing", str(exc)
        except MediaError as exc:
            result.ok, result.error_code, result.error_message = False, exc.code, exc.message
        else:
            result.ok = True
            result.output_uri, result.sha256 = stored.uri, stored.sha256
            result.output_seconds = finished.duration_s
        result.processing_seconds = time.perf_counter() - started
        if not result.ok:
            log.warning("postprocess failed", extra={"error_code": result.error_code})
        return result
