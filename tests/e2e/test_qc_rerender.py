"""A black render fails postprocess QC, is rendered again (bounded), then the job fails with `qc_failed`.

The animatic provider renders an all-black clip when the prompt carries `[animatic:black]` (a test
hook, see render-adapter providers/animatic.py), which QC's black check rejects with `rerender`.
"""

from __future__ import annotations

import itertools
import json
import time

import httpx

from reelforge_local.stack import Stack
from reelforge_orchestrator.workflow import QC_RENDER_ATTEMPTS
from tests.conftest import db_fetch
from tests.e2e.helpers import submit, wait_for


def test_black_render_fails_qc_is_rerendered_then_fails_with_qc_failed(stack: Stack, api: httpx.Client) -> None:
    job = submit(api, prompt="[animatic:black] A purifier in the dark", seconds=2, size="640x360")

    done = wait_for(api, job["id"], {"completed", "failed"}, timeout=180)

    assert done["status"] == "failed", done
    assert done["error"]["code"] == "qc_failed"
    assert "black" in done["error"]["message"]
    # (A re-render waits for a pool slot in `rendering` and is dispatched from there: repeats collapse.)
    states = [state for state, _ in itertools.groupby(e["status"] for e in done["timeline"])]
    assert states == ["queued", "admitted", *["rendering", "postprocessing"] * QC_RENDER_ATTEMPTS, "failed"]
    renders = db_fetch(stack, "render", "SELECT render_id FROM renders WHERE job_id = $1"
                       " ORDER BY render_id", job["id"])  # fmt: skip
    assert [r["render_id"] for r in renders] == [f"{job['id']}/r{n}" for n in range(1, QC_RENDER_ATTEMPTS + 1)]
    finishes = db_fetch(stack, "postprocess", "SELECT render_id, qc_passed, error_code, qc_report FROM finishes"
                        " WHERE job_id = $1 ORDER BY render_id", job["id"])  # fmt: skip
    assert [(f["qc_passed"], f["error_code"]) for f in finishes] == [(False, "qc_failed")] * QC_RENDER_ATTEMPTS
    report = json.loads(finishes[0]["qc_report"])
    black = next(c for c in report["outputs"][0]["checks"] if c["name"] == "black")
    assert not black["passed"] and black["rerender"] and black["measured"] > 0.95
    reservation = db_fetch(stack, "billing", "SELECT state FROM reservations WHERE job_id = $1", job["id"])
    assert reservation == [{"state": "released"}]


def test_a_jobs_own_qc_thresholds_decide_a_black_render_passes(stack: Stack, api: httpx.Client) -> None:
    """The same black render, with a job that allows black pictures: one render, completed, and the
    report shows the thresholds that let it through."""
    job = submit(api, prompt="[animatic:black] A purifier in the dark", seconds=2, size="640x360",
                 postprocess={"qc": {"max_black_fraction": 1.0, "max_black_seconds": 2.5}})  # fmt: skip

    done = wait_for(api, job["id"], {"completed", "failed"}, timeout=180)

    assert done["status"] == "completed", done
    states = [state for state, _ in itertools.groupby(e["status"] for e in done["timeline"])]
    assert states.count("rendering") == 1
    deadline = time.monotonic() + 30  # the report arrives by its own topic, beside the status
    while (found := api.get(f"/v1/jobs/{job['id']}/qc")).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    report = found.json()
    assert report["passed"] and report["thresholds"]["max_black_seconds"] == 2.5
    checks = {c["name"]: c for c in report["outputs"][0]["checks"]}
    assert checks["black"]["measured"] > 0.95 and checks["black"]["passed"]
    assert checks["black_seconds"]["measured"] > 1.9 and checks["black_seconds"]["limit"] == 2.5
