"""Batches and templates through the whole platform: a 3-line JSON-lines batch reaches completion with
progress and a results manifest whose signed links download the videos; a templated job with 2 variants."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from reelforge_local.stack import Stack
from tests.e2e.helpers import TERMINAL, probe, wait_for


def wait_for_batch(api: httpx.Client, batch_id: str, timeout: float = 180) -> tuple[dict[str, Any], list[int]]:
    """The batch once every job ended, and the progress values seen on the way."""
    deadline = time.monotonic() + timeout
    seen: list[int] = []
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = api.get(f"/v1/batches/{batch_id}").json()
        seen.append(view["progress"])
        if view["status"] in ("completed", "cancelled"):
            return view, seen
        time.sleep(0.25)
    raise AssertionError(f"batch {batch_id} not finished after {timeout}s: {view}")


def test_batch_of_three_completes_with_progress_and_results(stack: Stack, api: httpx.Client, tmp_path: Path) -> None:
    lines = [
        {"prompt": "A red T-shirt on a hanger", "seconds": 2, "size": "640x360", "metadata": {"sku": "TS-RED"}},
        {"prompt": "A bluetooth speaker on a desk", "seconds": 2, "size": "640x360", "metadata": {"sku": "SP-1"}},
        {"template": "ecommerce-listing-9x16", "variables": {"product": "a wooden toy train"}, "seconds": 2,
         "size": "720x1280", "metadata": {"sku": "TOY-7"}},
    ]
    response = api.post("/v1/batches", content="\n".join(json.dumps(line) for line in lines).encode(),
                        headers={"Content-Type": "application/jsonl", "Idempotency-Key": f"e2e-{time.time()}"})
    assert response.status_code == 202, response.text
    batch = response.json()
    assert (batch["total_jobs"], batch["counts"], batch["progress"]) == (3, {"queued": 3}, 0)

    done, seen = wait_for_batch(api, batch["id"])
    assert done["status"] == "completed" and done["counts"] == {"completed": 3}, done
    assert done["progress"] == 100 and seen == sorted(seen)  # progress never goes backwards

    manifest = api.get(f"/v1/batches/{batch['id']}/results")
    assert manifest.status_code == 200 and manifest.headers["content-type"].startswith("application/jsonl")
    results = [json.loads(line) for line in manifest.text.splitlines()]
    assert [(r["line"], r["status"], r["error_code"]) for r in results] == [
        (1, "completed", None), (2, "completed", None), (3, "completed", None)]
    sizes = [(640, 360), (640, 360), (720, 1280)]
    for result, size in zip(results, sizes, strict=True):
        video = httpx.get(result["download_url"], timeout=30)  # signed: no API key
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        path = tmp_path / f"{result['job_id']}.mp4"
        path.write_bytes(video.content)
        stream = next(s for s in probe(path)["streams"] if s["codec_type"] == "video")
        assert (stream["width"], stream["height"]) == size
    templated = api.get(f"/v1/jobs/{results[2]['job_id']}").json()
    assert templated["template"] == "ecommerce-listing-9x16" and templated["metadata"] == {"sku": "TOY-7"}
    assert templated["narration"].startswith("a wooden toy train.")


def test_templated_job_with_two_variants(stack: Stack, api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"template": "product-ad", "variables": {"product": "a water purifier"},
                                          "variants": 2, "seconds": 2, "size": "640x360"})
    assert response.status_code == 202, response.text
    group = response.json()
    assert group["object"] == "job_group" and len(group["data"]) == 2
    first, second = group["data"]
    assert (first["variant"], second["variant"]) == (0, 1) and first["seed"] != second["seed"]
    assert first["prompt"] != second["prompt"]  # the template's prompt variations
    ended = [wait_for(api, job["id"], TERMINAL, timeout=180) for job in group["data"]]
    assert [job["status"] for job in ended] == ["completed", "completed"], ended
    batch = api.get(f"/v1/batches/{group['batch_id']}").json()
    assert (batch["kind"], batch["status"], batch["counts"]) == ("variants", "completed", {"completed": 2})
    listed = api.get("/v1/jobs", params={"batch_id": group["batch_id"]}).json()["data"]
    assert {job["id"] for job in listed} == {first["id"], second["id"]}
