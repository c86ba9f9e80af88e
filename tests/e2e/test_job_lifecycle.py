"""One job through the whole platform: real Kafka, PostgreSQL, FFmpeg, five service processes."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from reelforge_local.stack import Stack, Tenant
from tests.conftest import db_fetch
from tests.e2e.helpers import probe, submit, subtitle_text, wait_for

NARRATION = "Meet AquaPure. Clean water, straight from your tap."
RATE_720P_MICROS = 25_000  # billing's rate card: animatic up to 1280x720, per second


def settled_charges(stack: Stack, job_id: str) -> list[dict[str, object]]:
    return db_fetch(
        stack, "billing",
        "SELECT t.id, e.amount FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id"
        " WHERE t.kind = 'settle' AND t.job_id = $1 AND e.account_id = 'platform:revenue'",
        job_id,
    )


def test_job_renders_with_voice_and_subtitles_and_is_charged_once(
    stack: Stack, api: httpx.Client, tmp_path: Path
) -> None:
    job = submit(api, prompt="A water purifier on a kitchen counter. Water pours into a glass.",
                 seconds=4, size="1280x720", narration=NARRATION, seed=7)
    assert job["status"] == "queued"

    done = wait_for(api, job["id"], {"completed", "failed"})

    assert done["status"] == "completed", done
    assert [e["status"] for e in done["timeline"]] == [
        "queued", "admitted", "rendering", "postprocessing", "completed"]
    video = api.get(f"/v1/jobs/{job['id']}/content")
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    info = probe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert abs(float(info["format"]["duration"]) - 4.0) <= 0.1
    assert streams["audio"]["codec_name"] == "aac"
    assert streams["subtitle"]["codec_name"] == "mov_text"
    assert _words(subtitle_text(path)) == _words(NARRATION)
    charges = settled_charges(stack, job["id"])
    assert len(charges) == 1
    assert charges[0]["amount"] == RATE_720P_MICROS * 4 == done["cost"]["amount_micros"]


def test_failing_render_fails_the_job_and_releases_the_credit(stack: Stack, api: httpx.Client) -> None:
    job = submit(api, prompt="A 4K hero shot of the purifier", seconds=2, size="3840x2160")

    done = wait_for(api, job["id"], {"completed", "failed"})

    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_input"
    assert "pixels per frame" in done["error"]["message"]
    reservation = db_fetch(stack, "billing", "SELECT state, charged_micros FROM reservations WHERE job_id = $1",
                           job["id"])
    assert reservation == [{"state": "released", "charged_micros": None}]
    assert settled_charges(stack, job["id"]) == []
    assert api.get(f"/v1/jobs/{job['id']}/content").status_code == 409


def test_another_tenants_job_is_not_found(stack: Stack, api: httpx.Client, tenant: Tenant) -> None:
    job = submit(api, prompt="Private to the first tenant", seconds=1, size="640x360")
    other = stack.create_tenant("e2e-other-tenant", credit_usd="0")
    headers = {"Authorization": f"Bearer {other.api_key}"}

    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/content"):
        response = httpx.get(stack.gateway_url + path, headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "job_not_found"


def test_tenant_without_credit_gets_a_clear_failure(stack: Stack) -> None:
    broke = stack.create_tenant("e2e-broke-tenant", credit_usd="0")
    with httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {broke.api_key}"}) as api:
        job = submit(api, prompt="Costs money", seconds=2, size="640x360")
        done = wait_for(api, job["id"], {"completed", "failed"})
    assert done["status"] == "failed"
    assert done["error"]["code"] == "insufficient_credit"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())
