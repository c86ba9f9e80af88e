"""Native /v1/jobs additions: metadata, list with cursor and filters, cancel, SSE events."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from reelforge.jobs.v1 import jobs_pb2
from services.gateway.tests.harness import Gateway


@pytest.fixture
def api(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.api_key}"}, timeout=15)


def _submit(api: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = api.post("/v1/jobs", json={"prompt": "A toy", "seconds": 4, **extra})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_metadata_is_stored_echoed_and_limited(api: httpx.Client) -> None:
    job = _submit(api, metadata={"customer": "shop-42", "sku": "TSHIRT-RED"})
    assert job["metadata"] == {"customer": "shop-42", "sku": "TSHIRT-RED"}
    assert api.get(f"/v1/jobs/{job['id']}").json()["metadata"] == job["metadata"]
    too_many = api.post("/v1/jobs", json={"prompt": "x", "seconds": 4, "metadata": {f"k{i}": "v" for i in range(17)}})
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "metadata"
    too_long = api.post("/v1/jobs", json={"prompt": "x", "seconds": 4, "metadata": {"k": "v" * 501}})
    assert too_long.status_code == 422
    not_strings = api.post("/v1/jobs", json={"prompt": "x", "seconds": 4, "metadata": {"k": {"nested": 1}}})
    assert not_strings.status_code == 422


def test_list_pages_with_a_cursor(api: httpx.Client) -> None:
    ids = [_submit(api)["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["data"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids))
    assert pages == 3
    assert api.get("/v1/jobs", params={"cursor": "garbage!"}).json()["code"] == "invalid_cursor"


def test_list_filters(api: httpx.Client, gateway: Gateway) -> None:
    a = _submit(api, metadata={"customer": "a", "campaign": "x"})
    b = _submit(api, metadata={"customer": "b", "campaign": "x"})
    gateway.advance(b["id"], "rendering", 10)

    def ids(**params: Any) -> list[str]:
        response = api.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["data"]]

    assert ids(metadata="customer=a") == [a["id"]]
    assert ids(metadata=["campaign=x", "customer=b"]) == [b["id"]]
    assert ids(metadata="campaign=x") == [b["id"], a["id"]]
    assert ids(metadata="customer=zzz") == []
    assert ids(status="rendering") == [b["id"]]
    assert ids(status=["queued", "rendering"]) == [b["id"], a["id"]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert ids(created_after=future) == []
    assert ids(created_after=past, created_before=future) == [b["id"], a["id"]]
    assert ids(batch_id="batch_none") == []
    assert api.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert api.get("/v1/jobs", params={"metadata": "novalue"}).status_code == 422


def test_list_is_tenant_scoped(api: httpx.Client, gateway: Gateway) -> None:
    _submit(api)
    _, other_key = gateway.new_tenant("other")
    other = httpx.get(f"{gateway.url}/v1/jobs", headers={"Authorization": f"Bearer {other_key}"})
    assert other.json()["data"] == []


def test_cancel_writes_one_event_through_the_outbox(api: httpx.Client, gateway: Gateway) -> None:
    job = _submit(api)
    first = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert first.status_code == 202
    assert first.json()["cancel_requested_at"] is not None
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202  # asking again is harmless
    rows = gateway.run(gateway.pool.fetch(
        "SELECT key, payload, headers FROM outbox WHERE topic = 'jobs.v1.cancel-requested'"))
    assert len(rows) == 1
    event = jobs_pb2.JobCancelRequested.FromString(rows[0]["payload"])
    assert (event.job_id, event.tenant_id) == (job["id"], gateway.tenant_id)
    assert bytes(rows[0]["key"]) == job["id"].encode()
    assert json.loads(rows[0]["headers"])["event-type"] == "reelforge.jobs.v1.JobCancelRequested"


def test_cancel_after_the_end_and_of_others(api: httpx.Client, gateway: Gateway) -> None:
    job = _submit(api)
    gateway.advance(job["id"], "failed", 0, error_code="timeout", error_message="slow")
    ended = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert ended.status_code == 409 and ended.json()["code"] == "job_not_cancellable"
    _, other_key = gateway.new_tenant("other")
    theirs = httpx.post(f"{gateway.url}/v1/jobs/{_submit(api)['id']}/cancel",
                        headers={"Authorization": f"Bearer {other_key}"})
    assert theirs.status_code == 404
    assert api.post("/v1/jobs/job_missing/cancel").status_code == 404


def _read_events(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert name == "status"
                events.append(json.loads(line.removeprefix("data: ")))
    return events


def test_sse_stream_sees_every_transition_and_ends(api: httpx.Client, gateway: Gateway) -> None:
    job = _submit(api)

    def orchestrate() -> None:
        for state, progress in [("admitted", 5), ("rendering", 20), ("rendering", 60), ("postprocessing", 90)]:
            time.sleep(0.3)
            gateway.advance(job["id"], state, progress)
        time.sleep(0.3)
        gateway.advance(job["id"], "completed", 100, output_uri="cas://sha256/" + "0" * 64)

    threading.Thread(target=orchestrate).start()
    events = _read_events(api, job["id"])
    assert [(e["status"], e["progress"]) for e in events] == [
        ("queued", 0), ("admitted", 5), ("rendering", 20), ("rendering", 60), ("postprocessing", 90),
        ("completed", 100),
    ]
    assert [e["sequence"] for e in events] == [0, 1, 2, 3, 4, 5]


def test_sse_sends_transitions_committed_back_to_back_one_by_one(api: httpx.Client, gateway: Gateway) -> None:
    job = _submit(api)

    def orchestrate() -> None:
        time.sleep(0.5)  # the stream is open
        for state, progress in [("admitted", 5), ("rendering", 20), ("rendering", 40), ("rendering", 60)]:
            gateway.advance(job["id"], state, progress)  # no pause: one wake-up may find them all
        gateway.advance(job["id"], "failed", 60, error_code="provider_error", error_message="gone")

    threading.Thread(target=orchestrate).start()
    events = _read_events(api, job["id"])
    assert [(e["status"], e["progress"], e["sequence"]) for e in events] == [
        ("queued", 0, 0), ("admitted", 5, 1), ("rendering", 20, 2), ("rendering", 40, 3), ("rendering", 60, 4),
        ("failed", 60, 5)]
    assert [e["error"] for e in events][-2:] == [None, {"code": "provider_error", "message": "gone"}]


def test_sse_on_a_finished_job_sends_one_event(api: httpx.Client, gateway: Gateway) -> None:
    job = _submit(api)
    gateway.advance(job["id"], "failed", 0, error_code="timeout", error_message="slow")
    events = _read_events(api, job["id"])
    assert len(events) == 1
    assert events[0]["status"] == "failed" and events[0]["error"] == {"code": "timeout", "message": "slow"}
    assert api.get("/v1/jobs/job_missing/events").status_code == 404
