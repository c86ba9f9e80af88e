"""Consumes postprocess requests: runs the finishing pipeline, stores every output in the content
store, records the finish with its QC report, and reports the result (outbox).

Idempotent by render attempt (job id + render id): a redelivered request that was already answered
is skipped, while a new render of the same job (after a QC failure) is finished again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from reelforge.postprocess.v1 import postprocess_pb2
from reelforge_core import outbox, topics
from reelforge_core.content import ContentNotFound, ContentStore
from reelforge_core.finishing import FinishPlan, build_plan, parse_options
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_core.media import MediaError
from reelforge_postprocess import metrics, qc
from reelforge_postprocess.pipeline import PipelineResult, run_pipeline
from reelforge_postprocess.thumbnails import thumbnails_vtt

log = logging.getLogger(__name__)
CONSUMER = "postprocess"
QC_FAILED = "qc_failed"


def finish_key(request: postprocess_pb2.PostprocessRequested) -> str:
    return f"{request.job_id}|{request.render_id}" if request.render_id else request.job_id


@dataclass
class Finish:
    result: postprocess_pb2.PostprocessResult
    qc_report: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class PostprocessWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        content: ContentStore,
        timeout_seconds: float,
        x264_preset: str = "veryfast",
        x264_crf: int = 21,
    ) -> None:
        self._pool = pool
        self._content = content
        self._timeout = timeout_seconds
        self._preset = x264_preset
        self._crf = x264_crf

    async def handle(self, event: Event) -> None:
        request = event.parse(postprocess_pb2.PostprocessRequested)
        if not request.job_id or not request.input_uri:
            raise PoisonMessage("PostprocessRequested without job_id or input_uri")
        key = finish_key(request)
        async with self._pool.acquire() as conn:
            if await outbox.already_processed(conn, CONSUMER, key):
                return
        finish = await self._finish(request)
        result = finish.result
        async with self._pool.acquire() as conn, conn.transaction():
            if not await outbox.mark_processed(conn, CONSUMER, key):
                return
            await conn.execute(
                "INSERT INTO finishes (finish_key, job_id, render_id, input_uri, output_uri, error_code,"
                " processing_seconds, qc_passed, qc_report, outputs, stage_seconds)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11::jsonb)",
                key, request.job_id, request.render_id or None, request.input_uri, result.output_uri or None,
                result.error_code or None, result.processing_seconds,
                result.qc_passed if finish.qc_report is not None else None,
                json.dumps(finish.qc_report) if finish.qc_report is not None else None,
                json.dumps(finish.outputs), json.dumps(finish.timings),
            )  # fmt: skip
            await outbox.enqueue(conn, topics.POSTPROCESS_RESULT, request.job_id, result, request.tenant_id)

    async def _finish(self, request: postprocess_pb2.PostprocessRequested) -> Finish:
        result = postprocess_pb2.PostprocessResult(
            job_id=request.job_id, tenant_id=request.tenant_id, render_id=request.render_id
        )
        finish = Finish(result)
        started = time.perf_counter()
        try:
            plan = build_plan(parse_options(request.options), request.narration, request.voice, request.free_tier)
            source = await asyncio.to_thread(self._content.path_of, request.input_uri)
            music = await asyncio.to_thread(self._music_path, plan)
            with tempfile.TemporaryDirectory(dir=self._content.scratch_dir()) as scratch:
                finished = await run_pipeline(
                    source,
                    plan,
                    Path(scratch),
                    music_path=music,
                    x264_preset=self._preset,
                    x264_crf=self._crf,
                    timeout_s=self._timeout,
                )
                await asyncio.to_thread(self._store, finished, plan, finish, Path(scratch))
        except ContentNotFound as exc:
            result.ok, result.error_code, result.error_message = False, "input_missing", str(exc)
        except MediaError as exc:
            result.ok, result.error_code, result.error_message = False, exc.code, exc.message
        result.processing_seconds = time.perf_counter() - started
        metrics.record(result.ok, result.error_code, result.processing_seconds)
        if not result.ok:
            log.warning("postprocess failed", extra={"error_code": result.error_code,
                                                     "error_message": result.error_message[:300]})  # fmt: skip
        return finish

    def _music_path(self, plan: FinishPlan) -> Path | None:
        if plan.music is None:
            return None
        try:
            return self._content.path_of(plan.music.uri)
        except ContentNotFound as exc:
            raise MediaError("invalid_input", f"music track {plan.music.uri!r} is not in the content store") from exc

    def _store(self, finished: PipelineResult, plan: FinishPlan, finish: Finish, scratch: Path) -> None:
        """Every output into the content store; URIs, QC and the verdict onto the result."""
        result = finish.result
        main = self._content.put(finished.main.path)
        result.output_uri, result.sha256 = main.uri, main.sha256
        result.output_seconds = finished.main.qc.measures.duration_s
        outputs: dict[str, Any] = {"main": main.uri, "renditions": {}, "subtitles": {}}
        for rendition in finished.renditions:
            stored = self._content.put(rendition.path)
            result.renditions.add(name=rendition.name, uri=stored.uri, width=rendition.width,
                                  height=rendition.height, stream_copied=rendition.stream_copied,
                                  qc_passed=rendition.qc.passed)  # fmt: skip
            outputs["renditions"][rendition.name] = stored.uri
        wanted = plan.subtitles
        for track in finished.subtitles if wanted and (wanted.srt or wanted.webvtt) else []:
            srt = self._content.put(track.srt).uri if wanted and wanted.srt and track.srt else ""
            vtt = self._content.put(track.vtt).uri if track.vtt else ""
            result.subtitles.add(language=track.language, srt_uri=srt, vtt_uri=vtt)
            outputs["subtitles"][track.language] = {"srt": srt, "vtt": vtt}
        thumbs = finished.thumbnails
        if thumbs.thumbnail is not None:
            result.thumbnail_uri = outputs["thumbnail"] = self._content.put(thumbs.thumbnail).uri
        if thumbs.sprite is not None and thumbs.layout is not None:
            result.sprite_uri = outputs["sprite"] = self._content.put(thumbs.sprite).uri
            track_file = scratch / "thumbnails.vtt"
            track_file.write_text(thumbnails_vtt(thumbs.layout, result.sprite_uri), encoding="utf-8")
            result.thumbnails_vtt_uri = outputs["thumbnails_vtt"] = self._content.put(track_file).uri
        reports = finished.reports
        finish.qc_report = {"passed": finished.qc_passed, "thresholds": plan.qc.thresholds(),
                            "outputs": [r.to_dict() for r in reports]}
        finish.outputs, finish.timings = outputs, finished.timings
        result.qc_passed = finished.qc_passed
        result.qc_report_json = json.dumps(finish.qc_report)
        result.ok = finished.qc_passed
        if not finished.qc_passed:
            result.error_code, result.error_message = QC_FAILED, qc.summary(reports)
            result.rerender = finished.rerender
