"""The native API's `postprocess` object (validated, carried in JobSpec.postprocess_options) and the
QC report (stored from postprocess.v1.result by the gateway's consumer code, read tenant-scoped)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelforge.jobs.v1 import jobs_pb2
from reelforge.postprocess.v1 import postprocess_pb2 as pb
from reelforge_gateway import qc_reports
from services.gateway.tests.harness import Gateway

FINISH: dict[str, Any] = {
    "narration": {
        "voice": "en-us",
        "segments": [
            {"start_seconds": 0.5, "text": "Meet AquaPure.", "translations": {"rus": "Встречайте АкваПьюр."}},
            {"start_seconds": 3, "text": "Чистая вода.", "voice": "ru", "language": "rus", "words_per_minute": 180,
             "translations": {"eng": "Clean water."}},
        ],
    },
    "subtitles": {"languages": ["eng", "rus"], "srt": True,
                  "burn_in": {"language": "rus", "style": {"position": "top", "size_fraction": 0.06}}},
    "loudness": {"integrated_lufs": -16},
    "renditions": [{"name": "9x16", "width": 720, "height": 1280, "fit": "crop"}, {"width": 720, "height": 720}],
    "thumbnails": {"thumbnail": True, "sprite": True},
}  # fmt: skip


@pytest.fixture
def api(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=15)


def _submitted_spec(gateway: Gateway, job_id: str) -> jobs_pb2.JobSpec:
    payload = gateway.run(gateway.pool.fetchval(
        "SELECT payload FROM outbox WHERE topic = 'jobs.v1.submitted' AND key = $1", job_id.encode()))  # fmt: skip
    event = jobs_pb2.JobSubmitted()
    event.ParseFromString(payload)
    return event.spec


def test_postprocess_object_travels_in_the_job_spec(api: httpx.Client, gateway: Gateway) -> None:
    response = api.post("/v1/jobs", json={"prompt": "A water purifier", "seconds": 6, "postprocess": FINISH})
    assert response.status_code == 202, response.text
    options = pb.PostprocessOptions()
    options.ParseFromString(_submitted_spec(gateway, response.json()["id"]).postprocess_options)
    first, second = options.narration.segments
    assert (first.start_seconds, first.text, dict(first.translations)) == (0.5, "Meet AquaPure.",
                                                                           {"rus": "Встречайте АкваПьюр."})  # fmt: skip
    assert (second.voice, second.language, second.words_per_minute) == ("ru", "rus", 180)
    assert list(options.subtitles.languages) == ["eng", "rus"] and options.subtitles.srt
    assert options.subtitles.burn_in.language == "rus"
    assert options.subtitles.burn_in.style.position == pb.SubtitleStyle.POSITION_TOP
    assert options.loudness.enabled and options.loudness.integrated_lufs == -16
    assert options.loudness.true_peak_dbtp == -1  # defaults filled
    assert [(r.name, r.width, r.height, r.fit) for r in options.renditions] == [
        ("9x16", 720, 1280, pb.Rendition.FIT_CROP), ("", 720, 720, pb.Rendition.FIT_PAD)]  # fmt: skip
    assert options.thumbnails.thumbnail and options.thumbnails.sprite
    assert not options.HasField("music") and not options.HasField("watermark")  # the tier decides the watermark

    plain = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4, "narration": "Hello."})
    assert _submitted_spec(gateway, plain.json()["id"]).postprocess_options == b""


def _problem(api: httpx.Client, finish: dict[str, Any], **job: Any) -> dict[str, Any]:
    response = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 6, **job, "postprocess": finish})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_bad_postprocess_objects_get_problem_details_naming_the_field(api: httpx.Client) -> None:
    segment = {"start_seconds": 1, "text": "Hi."}
    shape = _problem(api, {"narration": {"segments": [{**segment, "words_per_minute": 900}]}})
    assert shape["code"] == "invalid_request"
    assert shape["errors"][0]["field"] == "postprocess.narration.segments.0.words_per_minute"
    assert _problem(api, {"renditions": [{"width": 721, "height": 720}]})["errors"][0]["field"] == (
        "postprocess.renditions.0.width")  # fmt: skip
    assert _problem(api, {"watermark": {"disabled": True}})["errors"][0]["field"] == "postprocess.watermark"
    assert _problem(api, {"music": {"uri": "https://example.com/x.mp3"}})["errors"][0]["field"] == (
        "postprocess.music.uri")  # fmt: skip

    late = _problem(api, {"narration": {"segments": [{**segment, "start_seconds": 6}]}})
    assert (late["code"], late["errors"][0]["field"]) == ("invalid_postprocess",
                                                          "postprocess.narration.segments.0.start_seconds")  # fmt: skip
    both = _problem(api, {"narration": {"segments": [segment]}}, narration="Also this.")
    assert both["code"] == "invalid_postprocess" and "not both" in both["detail"]
    voice = _problem(api, {"narration": {"segments": [{**segment, "voice": "xx-evil"}]}})
    assert voice["errors"][0]["field"] == "postprocess.narration.segments.0.voice"
    missing = _problem(api, {"music": {"uri": "cas://sha256/" + "0" * 64}})
    assert (missing["code"], missing["errors"][0]["field"]) == ("invalid_postprocess", "postprocess.music.uri")
    # Postprocess's own rules, applied at the door: a subtitle language needs every segment's text.
    untranslated = _problem(api, {"narration": {"segments": [segment]}, "subtitles": {"languages": ["eng", "deu"]}})
    assert untranslated["code"] == "invalid_postprocess" and "'deu'" in untranslated["detail"]
    assert untranslated["errors"][0]["field"] == "postprocess.subtitles.languages"
    burn = _problem(api, {"narration": {"segments": [segment]}, "subtitles": {"burn_in": {"language": "rus"}}})
    assert "burn-in language" in burn["detail"]
    assert burn["errors"][0]["field"] == "postprocess.subtitles.burn_in.language"


def test_qc_thresholds_travel_in_the_job_spec_and_bad_ones_name_the_field(api: httpx.Client, gateway: Gateway) -> None:
    qc = {"enforce": True, "max_black_seconds": 1.5, "av_sync_tolerance_ms": 120, "loudness_tolerance_lu": 0.5}
    response = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4, "postprocess": {"qc": qc}})
    assert response.status_code == 202, response.text
    options = pb.PostprocessOptions()
    options.ParseFromString(_submitted_spec(gateway, response.json()["id"]).postprocess_options)
    assert (options.qc.max_black_seconds, options.qc.av_sync_tolerance_ms, options.qc.loudness_tolerance_lu) == (
        1.5, 120, 0.5)  # fmt: skip
    assert not options.qc.disabled and not options.qc.HasField("max_frozen_seconds")
    report_only = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4,
                                             "postprocess": {"qc": {"enforce": False}}})  # fmt: skip
    options.ParseFromString(_submitted_spec(gateway, report_only.json()["id"]).postprocess_options)
    assert options.qc.disabled

    for name, value in (("max_black_seconds", -1), ("av_sync_tolerance_ms", 10_000), ("loudness_tolerance_lu", 0),
                        ("max_frozen_fraction", 2), ("black_pixel_threshold", "0.1")):  # fmt: skip
        problem = _problem(api, {"qc": {name: value}})
        assert (problem["code"], problem["errors"][0]["field"]) == ("invalid_request", f"postprocess.qc.{name}")
    unknown = _problem(api, {"qc": {"max_black_minutes": 1}})
    assert unknown["errors"][0]["field"] == "postprocess.qc.max_black_minutes"


def test_a_stored_music_track_is_accepted(api: httpx.Client, gateway: Gateway, sample_video: Path) -> None:
    uri = gateway.content.put(sample_video).uri
    response = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4, "narration": "Hello.",
                                          "postprocess": {"music": {"uri": uri, "ducking": False}}})  # fmt: skip
    assert response.status_code == 202, response.text


def test_openapi_documents_the_postprocess_object_and_the_qc_routes(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    create = schema["components"]["schemas"]["CreateJob"]["properties"]
    assert "postprocess" in create
    components = schema["components"]["schemas"]
    assert {"Postprocess", "NarrationSegment", "Rendition", "Qc", "QcSummary", "QcReport"} <= set(components)
    assert components["Qc"]["properties"]["av_sync_tolerance_ms"]["anyOf"][0]["maximum"] == 5000
    assert "thresholds" in components["QcReport"]["properties"]
    assert components["NarrationSegment"]["properties"]["words_per_minute"]["anyOf"][0]["maximum"] == 450
    assert "/v1/jobs/{job_id}/qc" in schema["paths"]


def _report(passed: bool, black: float) -> dict[str, Any]:
    checks = [{"name": "duration", "passed": True, "measured": 0.01, "limit": 0.25, "enforced": True,
               "rerender": True, "detail": ""},
              {"name": "black", "passed": passed, "measured": black, "limit": 0.5, "enforced": True,
               "rerender": True, "detail": "1 stretch(es)"}]  # fmt: skip
    measures = {"duration_s": 4.0, "width": 1280, "height": 720, "fps": 24.0, "integrated_lufs": -14.1,
                "true_peak_dbtp": -1.6, "black": [[0.0, 4.0]] if not passed else []}  # fmt: skip
    return {"passed": passed, "thresholds": {"max_black_fraction": 0.5, "max_black_seconds": None},
            "outputs": [{"output": "main", "passed": passed, "measures": measures, "checks": checks}]}  # fmt: skip


def _result(job_id: str, tenant_id: str, attempt: int, report: dict[str, Any]) -> pb.PostprocessResult:
    return pb.PostprocessResult(job_id=job_id, tenant_id=tenant_id, render_id=f"{job_id}/r{attempt}",
                                qc_passed=report["passed"], qc_report_json=json.dumps(report))  # fmt: skip


def test_qc_report_is_shown_with_the_job_newest_render_wins_and_other_tenants_see_nothing(
    api: httpx.Client, gateway: Gateway
) -> None:
    job = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4}).json()
    assert job["qc"] is None
    not_ready = api.get(f"/v1/jobs/{job['id']}/qc")
    assert (not_ready.status_code, not_ready.json()["code"]) == (404, "qc_report_not_ready")

    failed, passed = _report(False, 1.0), _report(True, 0.0)
    assert gateway.run(qc_reports.record(gateway.pool, _result(job["id"], gateway.tenant_id, 1, failed)))
    summary = api.get(f"/v1/jobs/{job['id']}").json()["qc"]
    assert summary["passed"] is False and summary["render_id"] == f"{job['id']}/r1"
    assert summary["failures"] == [{"output": "main", "check": "black", "measured": 1.0, "limit": 0.5,
                                    "detail": "1 stretch(es)"}]  # fmt: skip
    assert gateway.run(qc_reports.record(gateway.pool, _result(job["id"], gateway.tenant_id, 2, passed)))
    # A redelivered report of the older render changes nothing.
    assert not gateway.run(qc_reports.record(gateway.pool, _result(job["id"], gateway.tenant_id, 1, failed)))
    assert not gateway.run(qc_reports.record(gateway.pool, _result(job["id"], gateway.tenant_id, 2, passed)))

    view = api.get(f"/v1/jobs/{job['id']}").json()["qc"]
    assert view["passed"] is True and view["failures"] == [] and view["render_id"].endswith("/r2")
    assert view["outputs"] == [{"output": "main", "passed": True, "duration_s": 4.0, "width": 1280, "height": 720,
                                "fps": 24.0, "integrated_lufs": -14.1, "true_peak_dbtp": -1.6}]  # fmt: skip
    listed = api.get("/v1/jobs").json()["data"]
    assert next(j for j in listed if j["id"] == job["id"])["qc"]["passed"] is True
    full = api.get(f"/v1/jobs/{job['id']}/qc").json()
    assert (full["object"], full["passed"], full["outputs"]) == ("job.qc_report", True, passed["outputs"])
    assert full["thresholds"] == {"max_black_fraction": 0.5, "max_black_seconds": None}

    other_tenant, other_key = gateway.new_tenant("rival")
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {other_key}"}, timeout=15) as rival:
        hidden = rival.get(f"/v1/jobs/{job['id']}/qc")
        assert (hidden.status_code, hidden.json()["code"]) == (404, "job_not_found")
    # A result naming the wrong tenant for the job is not stored against it.
    assert not gateway.run(qc_reports.record(gateway.pool, _result(job["id"], other_tenant, 3, failed)))
    assert api.get(f"/v1/jobs/{job['id']}/qc").json()["passed"] is True
