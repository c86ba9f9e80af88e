"""A job routed to WaveSpeedAI (its fake, over real HTTP) through the whole platform on the shared stack:
gateway -> orchestrator (a pool whose provider is WaveSpeedAI) -> render adapter (submit, poll, download,
store) -> postprocess -> completed, submitted exactly once at the provider.

The shared stack's render adapter is restarted with the provider configured, and routing is switched to it
for the duration of the module (the local animatic pool paused), then switched back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reelforge_local.stack import Stack
from reelforge_render.fakes.common import Behaviour, serving
from reelforge_render.fakes.wavespeed import create_app
from tests.conftest import db_fetch
from tests.e2e.helpers import probe, submit, wait_for

pytestmark = pytest.mark.stack
PROVIDER = "wavespeed-fake"
CONFIG_RELOAD_SECONDS = 6  # the orchestrator leader reloads pools and routes every 5 s


@pytest.fixture(scope="module")
def wavespeed_url(stack: Stack) -> Iterator[str]:
    with serving(create_app(Behaviour(latency_s=1.0, api_key="e2e-wavespeed-key"))) as url:
        adapter = stack.services["render-adapter"]
        variable = "REELFORGE_RENDER_PROVIDERS"
        before = adapter.env.get(variable)
        providers = json.loads(before) if before else {}
        providers[PROVIDER] = {
            "kind": "wavespeed", "base_url": url, "api_key_env": "REELFORGE_E2E_WAVESPEED_KEY",
            "model": "wavespeed-ai/wan-2.1/t2v-720p", "poll_interval_seconds": 0.3,
            "price_micros_per_second": 60_000, "allow_output_hosts": ["127.0.0.1/32", "::1/128"]}
        adapter.env.update({variable: json.dumps(providers), "REELFORGE_E2E_WAVESPEED_KEY": "e2e-wavespeed-key"})
        adapter.stop()
        adapter.restart()
        stack.cli("orchestrator", "set-pool", PROVIDER, "--provider", PROVIDER, "--model", "animatic",
                  "--slots", "4", "--route-position", "0")
        stack.cli("orchestrator", "pool-mode", "animatic", "pause")
        time.sleep(CONFIG_RELOAD_SECONDS)
        try:
            yield url
        finally:
            stack.cli("orchestrator", "pool-mode", PROVIDER, "pause")
            stack.cli("orchestrator", "pool-mode", "animatic", "resume")
            time.sleep(CONFIG_RELOAD_SECONDS)


def test_job_renders_at_wavespeed(stack: Stack, api: httpx.Client, wavespeed_url: str, tmp_path: Path) -> None:
    job = submit(api, prompt="A water purifier on a kitchen counter, rendered at WaveSpeedAI.", seconds=5,
                 size="1280x720")
    done = wait_for(api, job["id"], {"completed", "failed"}, timeout=240)
    assert done["status"] == "completed", done

    path = tmp_path / "out.mp4"
    path.write_bytes(api.get(f"/v1/jobs/{job['id']}/content").content)
    video = next(s for s in probe(path)["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (1280, 720)

    renders = db_fetch(stack, "render", "SELECT render_id, provider, external_id, state, submit_pending"
                       " FROM renders WHERE job_id = $1", job["id"])
    assert [(r["provider"], r["state"], r["submit_pending"]) for r in renders] == [(PROVIDER, "finished", False)]
    submissions = httpx.get(f"{wavespeed_url}/_fake/submissions").json()
    assert submissions["jobs_by_key"] == {renders[0]["render_id"]: 1}
    assert submissions["duplicates"] == [] and submissions["unkeyed"] == 0


def test_wavespeed_content_policy_failure_reaches_the_partner(api: httpx.Client, wavespeed_url: str) -> None:
    job = submit(api, prompt="Something the provider flags [policy]", seconds=5, size="1280x720")
    done = wait_for(api, job["id"], {"completed", "failed"}, timeout=240)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "content_policy", done
