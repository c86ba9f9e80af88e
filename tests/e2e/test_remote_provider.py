"""A job routed to a remote provider (the fake OpenAI Videos API, over real HTTP) through the whole platform:
gateway -> orchestrator (a capacity pool whose provider is the fake) -> render adapter (submit, poll,
download, store) -> postprocess -> completed, plus a provider-side content-policy failure reaching the partner."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reelforge_local.stack import Stack
from reelforge_render.fakes.common import Behaviour, serving
from reelforge_render.fakes.openai import create_app
from tests.conftest import CACHE, db_fetch
from tests.e2e.helpers import probe, submit, wait_for

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with serving(create_app(Behaviour(latency_s=1.0, api_key="e2e-key"))) as url:
        yield url


@pytest.fixture(scope="module")
def remote_stack(fake_url: str) -> Iterator[Stack]:
    env = {
        "REELFORGE_E2E_FAKE_KEY": "e2e-key",
        "REELFORGE_RENDER_PROVIDERS": json.dumps({"sora-fake": {
            "kind": "openai", "base_url": f"{fake_url}/v1", "api_key_env": "REELFORGE_E2E_FAKE_KEY",
            "poll_interval_seconds": 0.2, "price_micros_per_second": 100_000}}),
    }
    saved = {name: os.environ.get(name) for name in env}
    run_dir = CACHE / "test-stack-remote"
    shutil.rmtree(run_dir, ignore_errors=True)
    os.environ.update(env)  # the stack's processes inherit the environment when they are created
    try:
        with Stack(run_dir, CACHE, progress=lambda line: print(f"[stack] {line}", flush=True)) as platform:
            platform.start()
            # Route the gateway's model to the remote provider: a capacity pool for it, the local one paused.
            platform.cli("orchestrator", "set-pool", "sora-fake", "--provider", "sora-fake", "--model", "animatic",
                         "--slots", "4", "--route-position", "0")
            platform.cli("orchestrator", "pool-mode", "animatic", "pause")
            time.sleep(6)  # the leader reloads its configuration every 5 s
            for name, value in saved.items():
                os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
            yield platform
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def remote_api(remote_stack: Stack) -> Iterator[httpx.Client]:
    tenant = remote_stack.create_tenant("remote-tenant", credit_usd="50")
    with httpx.Client(base_url=remote_stack.gateway_url, timeout=15,
                      headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        yield client


def test_job_renders_at_the_remote_provider(remote_stack: Stack, remote_api: httpx.Client, fake_url: str,
                                            tmp_path: Path) -> None:
    job = submit(remote_api, prompt="A speaker on a desk, rendered remotely.", seconds=4, size="640x360",
                 narration="Rendered by a remote provider.")
    done = wait_for(remote_api, job["id"], {"completed", "failed"}, timeout=180)
    assert done["status"] == "completed", done

    path = tmp_path / "out.mp4"
    path.write_bytes(remote_api.get(f"/v1/jobs/{job['id']}/content").content)
    streams = {s["codec_type"]: s for s in probe(path)["streams"]}
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
    assert streams["audio"]["codec_name"] == "aac"

    renders = db_fetch(remote_stack, "render", "SELECT provider, external_id, state FROM renders WHERE job_id = $1",
                       job["id"])
    assert [(r["provider"], r["state"]) for r in renders] == [("sora-fake", "finished")]
    assert renders[0]["external_id"].startswith("video_")
    stats = httpx.get(f"{fake_url}/_fake/stats").json()
    assert stats["created"] >= 1 and stats["downloads"] >= 1


def test_provider_content_policy_failure_reaches_the_partner(remote_api: httpx.Client) -> None:
    job = submit(remote_api, prompt="Something the provider refuses [policy]", seconds=4, size="640x360")
    done = wait_for(remote_api, job["id"], {"completed", "failed"}, timeout=180)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "content_policy", done
