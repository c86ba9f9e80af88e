"""kill -9 a service while a job is in flight: the job still completes, and is charged once."""

from __future__ import annotations

import time

import httpx
import pytest

from reelforge_local.stack import Stack
from tests.conftest import db_fetch
from tests.e2e.helpers import submit, wait_for
from tests.e2e.test_job_lifecycle import settled_charges


@pytest.mark.parametrize("victim", ["orchestrator", "render-adapter", "postprocess"])
def test_job_survives_kill_9(stack: Stack, api: httpx.Client, victim: str) -> None:
    job = submit(api, prompt=f"Survives a crash of the {victim}. Three scenes. Bright colours.",
                 seconds=6, size="1280x720", narration="Still here after the crash.")
    wait_for(api, job["id"], {"rendering", "postprocessing"} if victim != "postprocess" else {"postprocessing"},
             timeout=60)
    time.sleep(0.3)  # let the victim get into the middle of its work

    service = stack.services[victim]
    service.kill()
    time.sleep(1.0)
    service.restart()

    done = wait_for(api, job["id"], {"completed", "failed"}, timeout=180)
    assert done["status"] == "completed", done
    assert len(settled_charges(stack, job["id"])) == 1
    assert len(db_fetch(stack, "billing", "SELECT 1 FROM ledger_transactions WHERE job_id = $1 AND kind = 'reserve'",
                        job["id"])) == 1
    statuses = [e["status"] for e in done["timeline"]]
    assert statuses == ["queued", "admitted", "rendering", "postprocessing", "completed"], statuses
