"""The worker against a real PostgreSQL and content store: outputs stored, finish recorded with its QC
report, the result enqueued once per render attempt, QC failures reported with `qc_failed`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from reelforge.postprocess.v1 import postprocess_pb2 as pb
from reelforge_core import db, topics
from reelforge_core.content import ContentStore
from reelforge_core.kafka import Event
from reelforge_core.media import probe
from reelforge_postprocess import __main__ as postprocess_main
from reelforge_postprocess.worker import PostprocessWorker
from services.postprocess.tests.media_helpers import make_video

MIGRATIONS = Path(postprocess_main.__file__).parent / "migrations"


@pytest_asyncio.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(postgres_dsn, "postprocess", 4)
    await db.migrate(pool, "postprocess", MIGRATIONS)
    try:
        yield pool
    finally:
        await pool.close()


def event(request: pb.PostprocessRequested, offset: int = 0) -> Event:
    return Event(topics.POSTPROCESS_REQUESTED, 0, offset, request.job_id, request.SerializeToString(), {})


async def results(pool: asyncpg.Pool) -> list[pb.PostprocessResult]:
    rows = await pool.fetch("SELECT payload FROM outbox WHERE topic = $1 ORDER BY id", topics.POSTPROCESS_RESULT)
    return [pb.PostprocessResult.FromString(row["payload"]) for row in rows]


async def finishes(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM finishes ORDER BY finished_at")]


@pytest.mark.asyncio
async def test_full_finish_is_stored_recorded_and_reported_once(pool: asyncpg.Pool, tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    source = store.put(await make_video(tmp_path / "in.mp4", seconds=3.0, size="640x360"))
    options = pb.PostprocessOptions()
    options.narration.segments.add(
        start_seconds=0.3, text="Pure water for every home.", translations={"deu": "Reines Wasser."}
    )
    options.subtitles.languages.extend(["eng", "deu"])
    options.subtitles.srt = options.subtitles.webvtt = True
    options.renditions.add(name="9x16", width=360, height=640, fit=pb.Rendition.FIT_CROP)
    options.thumbnails.thumbnail = options.thumbnails.sprite = True
    request = pb.PostprocessRequested(
        job_id="job-1", tenant_id="t1", input_uri=source.uri, options=options.SerializeToString(), render_id="job-1/r1"
    )
    worker = PostprocessWorker(pool, store, 120, x264_preset="ultrafast")

    await worker.handle(event(request))
    await worker.handle(event(request, offset=1))  # redelivered: skipped

    [result] = await results(pool)
    assert result.ok and result.qc_passed and not result.error_code and result.render_id == "job-1/r1"
    main = await probe(store.path_of(result.output_uri))
    assert [s.language for s in main.subtitles] == ["eng", "deu"]
    assert result.output_seconds == pytest.approx(3.0, abs=0.1)
    [rendition] = result.renditions
    assert (rendition.name, rendition.width, rendition.height, rendition.stream_copied) == ("9x16", 360, 640, False)
    vertical = await probe(store.path_of(rendition.uri))
    assert vertical.video is not None and (vertical.video.width, vertical.video.height) == (360, 640)
    assert [(s.language, s.srt_uri.endswith(".srt"), s.vtt_uri.endswith(".vtt")) for s in result.subtitles] == [
        ("eng", True, True), ("deu", True, True)]  # fmt: skip
    assert "Reines Wasser." in store.path_of(result.subtitles[1].srt_uri).read_text(encoding="utf-8")
    assert store.path_of(result.thumbnail_uri).suffix == ".jpg"
    track = store.path_of(result.thumbnails_vtt_uri).read_text(encoding="utf-8")
    assert track.startswith("WEBVTT") and f"{result.sprite_uri}#xywh=0,0,160,90" in track
    report = json.loads(result.qc_report_json)
    assert report["passed"] and [o["output"] for o in report["outputs"]] == ["main", "9x16"]

    [row] = await finishes(pool)
    assert (row["finish_key"], row["job_id"], row["render_id"], row["qc_passed"]) == (
        "job-1|job-1/r1", "job-1", "job-1/r1", True)  # fmt: skip
    assert json.loads(row["qc_report"]) == report
    assert json.loads(row["outputs"])["renditions"] == {"9x16": rendition.uri}
    assert {"narration", "mux", "pictures", "thumbnails", "qc_pictures", "qc_sound"} <= set(
        json.loads(row["stage_seconds"])
    )


@pytest.mark.asyncio
async def test_black_render_fails_qc_for_each_render_attempt(pool: asyncpg.Pool, tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    black = store.put(await make_video(tmp_path / "in.mp4", seconds=2.0, size="320x180", source="color=c=black"))
    worker = PostprocessWorker(pool, store, 60)
    for attempt in (1, 2):
        request = pb.PostprocessRequested(job_id="job-b", tenant_id="t1", input_uri=black.uri,
                                          render_id=f"job-b/r{attempt}")  # fmt: skip
        await worker.handle(event(request, offset=attempt))

    first, second = await results(pool)
    for result, attempt in ((first, 1), (second, 2)):
        assert (result.ok, result.qc_passed, result.rerender) == (False, False, True)
        assert result.error_code == "qc_failed" and result.render_id == f"job-b/r{attempt}"
        assert result.error_message.startswith("quality control failed: main: black")
        assert json.loads(result.qc_report_json)["outputs"][0]["checks"]
    assert [(r["finish_key"], r["qc_passed"], r["error_code"]) for r in await finishes(pool)] == [
        ("job-b|job-b/r1", False, "qc_failed"), ("job-b|job-b/r2", False, "qc_failed")]  # fmt: skip


@pytest.mark.asyncio
async def test_bad_options_and_missing_music_are_invalid_input(pool: asyncpg.Pool, tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    source = store.put(await make_video(tmp_path / "in.mp4", seconds=1.0))
    worker = PostprocessWorker(pool, store, 60)
    music = pb.PostprocessOptions()
    music.music.uri = "cas://sha256/" + "0" * 64 + ".m4a"
    for n, options in enumerate([b"\xff\x01garbage", music.SerializeToString()]):
        await worker.handle(event(pb.PostprocessRequested(job_id=f"job-{n}", input_uri=source.uri, options=options)))
    garbage, missing = await results(pool)
    assert (garbage.ok, garbage.error_code, garbage.rerender) == (False, "invalid_input", False)
    assert (missing.ok, missing.error_code) == (False, "invalid_input")
    assert "not in the content store" in missing.error_message
