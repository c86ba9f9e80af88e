"""One trace follows a job from the HTTP request through Kafka and gRPC across all five services."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import httpx

from reelforge_local.stack import Stack
from tests.e2e.helpers import submit, wait_for


def _spans(stack: Stack) -> list[dict[str, object]]:
    spans = []
    for path in stack.traces_dir.glob("*.jsonl"):
        spans += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return spans


def test_one_trace_spans_all_five_services(stack: Stack, api: httpx.Client) -> None:
    job = submit(api, prompt="Traced from end to end", seconds=1, size="640x360", narration="Traced.")
    assert wait_for(api, job["id"], {"completed", "failed"})["status"] == "completed"

    deadline = time.monotonic() + 10
    services: dict[str, set[str]] = defaultdict(set)
    while time.monotonic() < deadline:
        spans = _spans(stack)
        trace_ids = {
            s["trace_id"] for s in spans
            if s["attributes"].get("reelforge.job_id") == job["id"]  # type: ignore[union-attr]
        }
        services.clear()
        for span in spans:
            if span["trace_id"] in trace_ids:
                services[str(span["trace_id"])].add(str(span["service"]))
        if len(trace_ids) == 1 and len(next(iter(services.values()))) == 5:
            break
        time.sleep(0.3)
    assert len(services) == 1, f"expected one trace for the job, got {dict(services)}"
    assert next(iter(services.values())) == {"gateway", "orchestrator", "billing", "render-adapter", "postprocess"}
