"""A partner's `postprocess` object, end to end on the shared stack: voice-over segments in two
languages, two soft subtitle tracks, a loudness target and a 1:1 rendition; the finished MP4 is
checked with ffprobe/ffmpeg, and its QC report is visible through the API (and only to its tenant)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from reelforge_local.stack import Stack
from tests.e2e.helpers import probe, submit, wait_for

FINISH: dict[str, Any] = {
    "narration": {
        "voice": "en-us",
        "segments": [
            {"start_seconds": 0.3, "text": "Pure water.", "translations": {"rus": "Чистая вода."}},
            {"start_seconds": 2.0, "text": "Каждый день.", "voice": "ru", "translations": {"eng": "Every day."}},
        ],
    },
    "subtitles": {"languages": ["eng", "rus"], "srt": True},
    "loudness": {"integrated_lufs": -16},
    "renditions": [{"name": "square", "width": 360, "height": 360, "fit": "pad"}],
    "thumbnails": {"thumbnail": True},
    "qc": {"max_black_seconds": 1.5, "av_sync_tolerance_ms": 150, "loudness_tolerance_lu": 0.9},
}


def _cue_starts(path: Path, track: int) -> list[float]:
    srt = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:s:{track}", "-f", "srt", "-"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [int(h) * 3600 + int(m) * 60 + float(f"{s}.{ms}")
            for h, m, s, ms in re.findall(r"(\d+):(\d+):(\d+),(\d+) -->", srt)]  # fmt: skip


def _integrated_lufs(path: Path) -> float:
    stderr = subprocess.run(["ffmpeg", "-nostats", "-i", str(path), "-map", "0:a:0", "-af", "ebur128", "-f", "null",
                             "-"], capture_output=True, text=True, check=True).stderr  # fmt: skip
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", stderr)[-1])


def _qc_summary(api: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30  # the report arrives by its own topic, beside the status
    while time.monotonic() < deadline:
        summary: dict[str, Any] | None = api.get(f"/v1/jobs/{job_id}").json()["qc"]
        if summary is not None:
            return summary
        time.sleep(0.2)
    raise AssertionError("no QC summary on the job")


def test_postprocess_options_shape_the_finish_and_qc_is_visible(stack: Stack, api: httpx.Client,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    job = submit(api, prompt="A water purifier on a kitchen counter.", seconds=4, size="640x360", postprocess=FINISH)
    done = wait_for(api, job["id"], {"completed", "failed"}, timeout=180)
    assert done["status"] == "completed", done

    video = tmp_path / "out.mp4"
    video.write_bytes(api.get(f"/v1/jobs/{job['id']}/content").content)
    streams = probe(video)["streams"]
    assert [s["codec_name"] for s in streams if s["codec_type"] == "audio"] == ["aac"]
    assert [(s["codec_name"], s["tags"]["language"]) for s in streams if s["codec_type"] == "subtitle"] == [
        ("mov_text", "eng"), ("mov_text", "rus")]  # fmt: skip
    assert abs(_integrated_lufs(video) + 16) <= 1.0
    for track in (0, 1):  # each segment's cues start when its speech does, at the requested time
        starts = _cue_starts(video, track)
        assert any(abs(t - 0.3) <= 0.1 for t in starts) and any(abs(t - 2.0) <= 0.1 for t in starts), starts

    summary = _qc_summary(api, job["id"])
    assert summary["passed"] and summary["failures"] == []
    assert [o["output"] for o in summary["outputs"]] == ["main", "square"]
    assert summary["outputs"][1]["width"] == summary["outputs"][1]["height"] == 360
    report = api.get(f"/v1/jobs/{job['id']}/qc").json()
    assert report["passed"] and report["render_id"] == summary["render_id"]
    main = report["outputs"][0]
    assert {c["name"] for c in main["checks"]} >= {"duration", "av_sync", "subtitle_tracks", "black", "loudness"}
    assert abs(main["measures"]["integrated_lufs"] + 16) <= 1.0
    # The job's thresholds are the ones QC applied, and the report says so.
    assert {k: report["thresholds"][k] for k in FINISH["qc"]} == FINISH["qc"]
    assert report["thresholds"]["max_black_fraction"] == 0.5  # the default, for what the job left unset
    limits = {c["name"]: c["limit"] for c in main["checks"]}
    assert (limits["black_seconds"], limits["av_sync"]) == (1.5, 0.15)

    rival = stack.create_tenant("pp-rival", credit_usd="1")
    with httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {rival.api_key}"},
                      timeout=15) as other:  # fmt: skip
        hidden = other.get(f"/v1/jobs/{job['id']}/qc")
        assert (hidden.status_code, hidden.json()["code"]) == (404, "job_not_found")
