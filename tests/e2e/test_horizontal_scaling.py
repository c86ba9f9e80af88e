"""Two instances of every service: kill -9 one of each mid-load and every job still completes once."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from reelforge_local.stack import Stack
from tests.conftest import CACHE, db_fetch
from tests.e2e.helpers import submit, wait_for

JOBS = 6


@pytest.fixture(scope="module")
def scaled_stack() -> Iterator[Stack]:
    run_dir = CACHE / "test-stack-scaled"
    shutil.rmtree(run_dir, ignore_errors=True)
    with Stack(run_dir, CACHE, progress=lambda line: print(f"[scaled] {line}", flush=True), replicas=2) as stack:
        stack.start(timeout=180)
        yield stack


def test_jobs_survive_losing_one_instance_of_each_service(scaled_stack: Stack) -> None:
    tenant = scaled_stack.create_tenant("scaled-tenant", credit_usd="20")
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    first, second = (httpx.Client(base_url=g.url, headers=headers, timeout=15)
                     for g in scaled_stack.instances["gateway"])
    jobs = [submit(first, prompt=f"Scaled job {i}. Two scenes.", seconds=3, size="640x360",
                   narration=f"Job number {i}.") for i in range(JOBS)]
    wait_for(first, jobs[0]["id"], {"rendering", "postprocessing", "completed"}, timeout=60)

    for name in ("orchestrator", "render-adapter", "postprocess", "billing", "gateway"):
        scaled_stack.instances[name][0].kill()

    deadline = time.monotonic() + 240
    views = [wait_for(second, job["id"], {"completed", "failed"}, timeout=max(1, deadline - time.monotonic()))
             for job in jobs]
    assert [v["status"] for v in views] == ["completed"] * JOBS, [v.get("error") for v in views]
    for job in jobs:
        kinds = [row["kind"] for row in db_fetch(
            scaled_stack, "billing", "SELECT kind FROM ledger_transactions WHERE job_id = $1 ORDER BY id", job["id"])]
        assert kinds == ["reserve", "settle"], (job["id"], kinds)

    # A signed download link made by one gateway works on the other (they share the signing secret).
    restarted = scaled_stack.instances["gateway"][0]
    restarted.restart()
    link = second.get(f"/v1/jobs/{jobs[0]['id']}/download_url").json()["url"]
    path = link[link.index("/v1/"):] if link.startswith("http") else link
    video = httpx.get(f"{restarted.url}{path}", timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp", video.status_code
