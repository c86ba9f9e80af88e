"""/v1/batches and /v1/templates on a real gateway over a real PostgreSQL: uploads (JSON lines and
multipart), all-or-nothing validation by line, idempotency, progress, cancel, results manifest,
batch.completed webhook, templated jobs with variants, 10,000-line acceptance, tenant isolation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import topics
from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway
from services.gateway.tests.test_webhooks import Receiver, _deliver_all

JSONL = {"Content-Type": "application/jsonl"}


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings(webhook_allowed_hosts=["127.0.0.1"], batch_max_lines=10_000, batch_max_jobs=10_000)


def _client(gateway: Gateway, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {key or gateway.api_key}"},
                        timeout=60)


@pytest.fixture
def api(gateway: Gateway) -> httpx.Client:
    return _client(gateway)


def _lines(*jobs: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(job) for job in jobs).encode() + b"\n"


def _upload(api: httpx.Client, *jobs: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = api.post("/v1/batches", content=_lines(*jobs), headers={**JSONL, **(headers or {})})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _results(api: httpx.Client, batch_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/batches/{batch_id}/results")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/jsonl")
    return [json.loads(line) for line in response.text.splitlines()]


def _outbox(gateway: Gateway, topic: str) -> list[bytes]:
    rows = gateway.run(gateway.pool.fetch("SELECT payload FROM outbox WHERE topic = $1 ORDER BY id", topic))
    return [bytes(row["payload"]) for row in rows]


def test_upload_progress_results_and_batch_completed_webhook(gateway: Gateway, api: httpx.Client,
                                                             sample_video: Path) -> None:
    receiver = Receiver()
    try:
        endpoint = api.post("/v1/webhook_endpoints", json={"url": receiver.url, "events": ["batch.completed"]}).json()
        batch = _upload(api, {"prompt": "Red T-shirt", "seconds": 4, "metadata": {"sku": "TS-1"}},
                        {"prompt": "Blue speaker", "seconds": 4, "size": "720x1280"},
                        {"template": "product-ad", "variables": {"product": "a toy"}, "variants": 2})
        assert (batch["object"], batch["kind"], batch["status"]) == ("batch", "upload", "in_progress")
        assert (batch["line_count"], batch["total_jobs"], batch["counts"]) == (3, 4, {"queued": 4})
        assert batch["progress"] == 0
        results = _results(api, batch["id"])
        assert [(r["line"], r["variant"], r["status"]) for r in results] == [
            (1, 0, "queued"), (2, 0, "queued"), (3, 0, "queued"), (3, 1, "queued")]
        jobs = [api.get(f"/v1/jobs/{r['job_id']}").json() for r in results]
        assert all(job["batch_id"] == batch["id"] for job in jobs)
        assert jobs[0]["metadata"] == {"sku": "TS-1"} and jobs[1]["size"] == "720x1280"
        assert jobs[2]["template"] == "product-ad" and (jobs[2]["variant"], jobs[3]["variant"]) == (0, 1)
        assert jobs[2]["seed"] + 1 == jobs[3]["seed"]
        events = [jobs_pb2.JobSubmitted.FromString(p) for p in _outbox(gateway, topics.JOBS_SUBMITTED)]
        by_id = {event.job_id: event for event in events}
        assert set(by_id) == {job["id"] for job in jobs}
        assert by_id[jobs[3]["id"]].spec.batch_id == batch["id"]
        assert (by_id[jobs[3]["id"]].spec.template, by_id[jobs[3]["id"]].spec.variant) == ("product-ad", 1)
        listed = api.get("/v1/jobs", params={"batch_id": batch["id"], "limit": 100}).json()["data"]
        assert {job["id"] for job in listed} == {job["id"] for job in jobs}

        gateway.complete(jobs[0]["id"], sample_video)
        gateway.advance(jobs[1]["id"], "rendering", 50)
        gateway.advance(jobs[2]["id"], "failed", 0, error_code="render_failed", error_message="provider down")
        view = api.get(f"/v1/batches/{batch['id']}").json()
        assert view["counts"] == {"completed": 1, "rendering": 1, "failed": 1, "queued": 1}
        assert view["progress"] == (100 + 50 + 100 + 0) // 4 and view["status"] == "in_progress"
        _deliver_all(gateway)
        assert receiver.received == []  # not yet: two jobs are still going

        gateway.complete(jobs[1]["id"], sample_video)
        gateway.advance(jobs[3]["id"], "cancelled", 0)
        view = api.get(f"/v1/batches/{batch['id']}").json()
        assert (view["status"], view["progress"], view["completed_at"] is not None) == ("completed", 100, True)
        _deliver_all(gateway)
        assert len(receiver.received) == 1
        headers, body, _ = receiver.received[0]
        event = Webhook(endpoint["signing_secret"]).verify(body, headers)
        assert event["type"] == "batch.completed"
        assert event["data"]["id"] == batch["id"] and event["data"]["total"] == 4
        assert event["data"]["counts"] == {"completed": 2, "failed": 1, "cancelled": 1}
    finally:
        receiver.close()

    results = _results(api, batch["id"])
    assert [r["status"] for r in results] == ["completed", "completed", "failed", "cancelled"]
    assert results[2]["error_code"] == "render_failed" and results[2]["download_url"] is None
    video = httpx.get(results[0]["download_url"], timeout=10)  # signed: no API key
    assert video.status_code == 200 and video.content == sample_video.read_bytes()
    assert api.post(f"/v1/batches/{batch['id']}/cancel").json()["code"] == "batch_not_cancellable"


def test_multipart_upload_and_idempotency(api: httpx.Client) -> None:
    data = _lines({"prompt": "A mug", "seconds": 4}, {"prompt": "A lamp", "seconds": 6})
    first = api.post("/v1/batches", files={"file": ("catalogue.jsonl", data, "application/jsonl")},
                     headers={"Idempotency-Key": "cat-1"})
    assert first.status_code == 202, first.text
    again = api.post("/v1/batches", content=data, headers={"Content-Type": "application/x-ndjson",
                                                           "Idempotency-Key": "cat-1"})
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    other = api.post("/v1/batches", content=_lines({"prompt": "A vase", "seconds": 4}),
                     headers={**JSONL, "Idempotency-Key": "cat-1"})
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    batches = api.get("/v1/batches").json()["data"]
    assert [b["id"] for b in batches] == [first.json()["id"]]
    no_file = api.post("/v1/batches", files={"other": ("x.jsonl", data, "application/jsonl")})
    assert (no_file.status_code, no_file.json()["errors"][0]["field"]) == (422, "file")


def test_one_bad_line_rejects_the_batch_and_every_bad_line_is_listed(gateway: Gateway, api: httpx.Client) -> None:
    content = b"\n".join([
        json.dumps({"prompt": "fine", "seconds": 4}).encode(),
        json.dumps({"prompt": "too long", "seconds": 999}).encode(),
        b"{not json",
        b"",
        json.dumps({"template": "product-ad", "variables": {"style": "weird"}}).encode(),
        json.dumps({"template": "no-such-template"}).encode(),
        json.dumps({"prompt": "x", "seconds": 4, "surprise": True}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
    ])
    response = api.post("/v1/batches", content=content, headers=JSONL)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "batch_invalid" and problem["error_count"] == 6
    by_line = {error["line"]: error for error in problem["errors"]}
    assert sorted(by_line) == [2, 3, 5, 6, 7, 8]
    assert by_line[2]["code"] == "invalid_request" and by_line[2]["errors"][0]["field"] == "seconds"
    assert by_line[3]["code"] == "malformed_json"
    assert by_line[5]["code"] == "invalid_template_variables"
    assert {e["field"] for e in by_line[5]["errors"]} == {"variables.product", "variables.style"}
    assert by_line[6]["code"] == "template_not_found"
    assert by_line[7]["errors"][0]["field"] == "surprise"
    assert gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs")) == 0  # all or nothing
    assert gateway.run(gateway.pool.fetchval("SELECT count(*) FROM outbox")) == 0


def test_upload_limits(gateway: Gateway, api: httpx.Client) -> None:
    assert api.post("/v1/batches", content=b"", headers=JSONL).json()["code"] == "batch_empty"
    wrong_type = api.post("/v1/batches", json={"prompt": "x", "seconds": 4})
    assert (wrong_type.status_code, wrong_type.json()["code"]) == (415, "unsupported_media_type")
    not_utf8 = api.post("/v1/batches", content=b'{"prompt": "\xff"}', headers=JSONL)
    assert (not_utf8.status_code, not_utf8.json()["code"]) == (400, "invalid_jsonl")
    too_many = api.post("/v1/batches", content=_lines(*[{"prompt": "x", "seconds": 4}] * 10_001), headers=JSONL)
    assert (too_many.status_code, too_many.json()["code"]) == (422, "batch_too_large")
    variants = _lines(*[{"template": "explainer", "variables": {"topic": "tides"}, "variants": 8}] * 1251)
    too_many_jobs = api.post("/v1/batches", content=variants, headers=JSONL)
    assert (too_many_jobs.status_code, too_many_jobs.json()["code"]) == (422, "batch_too_large")
    huge = api.post("/v1/batches", content=b"{}\n" * (8 * 1024 * 1024), headers=JSONL)
    assert (huge.status_code, huge.json()["code"]) == (413, "payload_too_large")
    assert gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs")) == 0


def test_ten_thousand_lines_accepted_in_one_transaction(gateway: Gateway, api: httpx.Client) -> None:
    catalogue = [{"template": "ecommerce-listing-9x16", "variables": {"product": f"T-shirt #{i}"},
                  "metadata": {"sku": f"TS-{i}"}} for i in range(5_000)]
    catalogue += [{"prompt": f"Speaker #{i} on a desk", "seconds": 4, "metadata": {"sku": f"SP-{i}"}}
                  for i in range(5_000)]
    content = _lines(*catalogue)
    started = time.perf_counter()
    response = api.post("/v1/batches", content=content, headers=JSONL)
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text[:500]
    print(f"\n10,000-line batch ({len(content) / 1e6:.1f} MB) accepted in {elapsed:.2f} s")
    batch = response.json()
    assert batch["total_jobs"] == 10_000
    counts = gateway.run(gateway.pool.fetchrow(
        "SELECT (SELECT count(*) FROM jobs WHERE batch_id = $1) AS jobs,"
        " (SELECT count(*) FROM outbox WHERE topic = $2) AS events", batch["id"], topics.JOBS_SUBMITTED))
    assert (counts["jobs"], counts["events"]) == (10_000, 10_000)
    assert api.get(f"/v1/batches/{batch['id']}").json()["counts"] == {"queued": 10_000}
    assert len(_results(api, batch["id"])) == 10_000
    cancelled = api.post(f"/v1/batches/{batch['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelling"
    assert len(_outbox(gateway, topics.JOBS_CANCEL_REQUESTED)) == 10_000
    api.post(f"/v1/batches/{batch['id']}/cancel")  # asking again sends nothing more
    assert len(_outbox(gateway, topics.JOBS_CANCEL_REQUESTED)) == 10_000
    assert elapsed < 30


def test_batch_list_pages_with_a_cursor(api: httpx.Client) -> None:
    ids = [_upload(api, {"prompt": f"p{i}", "seconds": 4})["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = api.get("/v1/batches", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [batch["id"] for batch in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids))
    assert api.get("/v1/batches", params={"cursor": "???"}).json()["code"] == "invalid_cursor"


def test_templated_job_with_variants_on_post_jobs(gateway: Gateway, api: httpx.Client) -> None:
    single = api.post("/v1/jobs", json={"template": "explainer", "variables": {"topic": "tides", "steps": 4}})
    assert single.status_code == 202, single.text
    job = single.json()
    assert (job["object"], job["template"], job["seconds"], job["batch_id"]) == ("job", "explainer", 20.0, None)
    assert job["prompt"].startswith("Clear animated explainer about tides for beginners, 4 simple steps")
    assert job["narration"] == "tides, explained in 4 steps."

    body = {"template": "ecommerce-listing-1x1", "variables": {"product": "a speaker"}, "variants": 3,
            "seconds": 6, "metadata": {"sku": "SP-9"}}
    group = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "grp-1"})
    assert group.status_code == 202, group.text
    grouped = group.json()
    assert grouped["object"] == "job_group" and group.headers["Location"] == f"/v1/batches/{grouped['batch_id']}"
    assert [j["variant"] for j in grouped["data"]] == [0, 1, 2]
    assert {(j["size"], j["seconds"], j["batch_id"]) for j in grouped["data"]} == {("1024x1024", 6.0,
                                                                                     grouped["batch_id"])}
    assert len({j["seed"] for j in grouped["data"]}) == 3 and len({j["prompt"] for j in grouped["data"]}) == 3
    replay = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "grp-1"})
    assert replay.json() == grouped and replay.headers["Idempotent-Replayed"] == "true"
    batch = api.get(f"/v1/batches/{grouped['batch_id']}").json()
    assert (batch["kind"], batch["total_jobs"]) == ("variants", 3)

    seeds = api.post("/v1/jobs", json={"prompt": "A kettle", "seconds": 4, "variants": 2, "seed": 7}).json()
    assert [j["seed"] for j in seeds["data"]] == [7, 8]
    for bad, code in [({"template": "nope"}, "template_not_found"),
                      ({"template": "explainer"}, "invalid_template_variables"),
                      ({"template": "explainer", "variables": {"topic": "x"}, "size": "1x1"}, "invalid_request"),
                      ({"prompt": "x", "seconds": 4, "variables": {"a": 1}}, "invalid_request"),
                      ({"template": "explainer", "variables": {"topic": "x"}, "variants": 9}, "invalid_request")]:
        refused = api.post("/v1/jobs", json=bad)
        assert (refused.status_code, refused.json()["code"]) == (422, code), refused.text
    assert api.post("/v1/jobs", json={"seconds": 4}).json()["errors"][0]["field"] == "prompt"


def test_own_templates_crud(api: httpx.Client) -> None:
    listed = api.get("/v1/templates").json()["data"]
    assert {t["name"] for t in listed} == {"product-ad", "ecommerce-listing-9x16", "ecommerce-listing-1x1",
                                           "explainer"}
    assert all(t["builtin"] for t in listed)
    definition = {"name": "toy-promo", "prompt": "{{toy}} for ages {{age}}",
                  "variables": [{"name": "toy"}, {"name": "age", "type": "integer", "default": 5}],
                  "preset": {"seconds": 6, "size": "720x1280", "voice": "en-gb"}}
    created = api.post("/v1/templates", json=definition)
    assert created.status_code == 201, created.text
    assert created.json()["builtin"] is False and created.json()["preset"]["voice"] == "en-gb"
    assert api.post("/v1/templates", json=definition).json()["code"] == "template_exists"
    assert api.post("/v1/templates", json={**definition, "name": "explainer"}).json()["code"] == "template_exists"
    bad_preset = api.post("/v1/templates", json={**definition, "name": "t2", "preset": {"size": "2x2"}})
    assert (bad_preset.status_code, bad_preset.json()["errors"][0]["field"]) == (422, "preset.size")
    bad_var = api.post("/v1/templates", json={**definition, "name": "t3", "prompt": "{{nope}}"})
    assert bad_var.status_code == 422 and "not a declared variable" in bad_var.text
    job = api.post("/v1/jobs", json={"template": "toy-promo", "variables": {"toy": "A kite"}}).json()
    assert (job["prompt"], job["seconds"], job["voice"]) == ("A kite for ages 5", 6.0, "en-gb")

    updated = api.patch("/v1/templates/toy-promo", json={"prompt": "{{toy}}, ages {{age}}+"})
    assert updated.status_code == 200 and updated.json()["preset"]["size"] == "720x1280"
    assert api.get("/v1/templates/toy-promo").json()["prompt"] == "{{toy}}, ages {{age}}+"
    assert api.patch("/v1/templates/toy-promo", json={"prompt": "{{gone}}"}).status_code == 422
    assert api.patch("/v1/templates/explainer", json={"prompt": "x"}).json()["code"] == "template_read_only"
    assert api.delete("/v1/templates/explainer").json()["code"] == "template_read_only"
    assert api.delete("/v1/templates/toy-promo").json() == {"name": "toy-promo", "object": "template.deleted",
                                                           "deleted": True}
    assert api.get("/v1/templates/toy-promo").json()["code"] == "template_not_found"
    assert api.post("/v1/jobs", json={"template": "toy-promo", "variables": {"toy": "x"}}).json()["code"] == \
        "template_not_found"


def test_tenants_are_isolated_on_every_batch_and_template_route(gateway: Gateway, api: httpx.Client) -> None:
    _, other_key = gateway.new_tenant("globex")
    other = _client(gateway, other_key)
    mine = _upload(api, {"prompt": "mine", "seconds": 4})
    assert api.post("/v1/templates", json={"name": "secret-sauce", "prompt": "x"}).status_code == 201

    for method, path in [("GET", f"/v1/batches/{mine['id']}"), ("GET", f"/v1/batches/{mine['id']}/results"),
                         ("POST", f"/v1/batches/{mine['id']}/cancel")]:
        response = other.request(method, path)
        assert (response.status_code, response.json()["code"]) == (404, "batch_not_found"), path
    assert other.get("/v1/batches").json()["data"] == []
    assert other.get("/v1/jobs", params={"batch_id": mine["id"]}).json()["data"] == []
    for method, path, body in [("GET", "/v1/templates/secret-sauce", None),
                               ("PATCH", "/v1/templates/secret-sauce", {"prompt": "stolen"}),
                               ("DELETE", "/v1/templates/secret-sauce", None)]:
        response = other.request(method, path, json=body)
        assert (response.status_code, response.json()["code"]) == (404, "template_not_found"), path
    assert "secret-sauce" not in {t["name"] for t in other.get("/v1/templates").json()["data"]}
    refused = other.post("/v1/jobs", json={"template": "secret-sauce"})
    assert refused.json()["code"] == "template_not_found"
    line = other.post("/v1/batches", content=_lines({"template": "secret-sauce"}), headers=JSONL).json()
    assert line["errors"][0]["code"] == "template_not_found"
    assert other.post("/v1/templates", json={"name": "secret-sauce", "prompt": "theirs"}).status_code == 201
    assert api.get("/v1/templates/secret-sauce").json()["prompt"] == "x"  # same name, separate templates
    assert api.get(f"/v1/batches/{mine['id']}").json()["status"] == "in_progress"
    assert api.get("/v1/batches/not-an-id").json()["code"] == "batch_not_found"
    unauthenticated = httpx.get(f"{gateway.url}/v1/batches/{mine['id']}")
    assert unauthenticated.status_code == 401


def test_jobs_ending_at_once_complete_the_batch_exactly_once(gateway: Gateway, api: httpx.Client) -> None:
    """The last jobs' status updates race in separate transactions; one of them must see the batch done."""
    import asyncio

    from google.protobuf.timestamp_pb2 import Timestamp

    from reelforge_gateway import store

    api.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/hooks", "events": ["batch.completed"]})
    for round_ in range(5):
        batch = _upload(api, *[{"prompt": f"r{round_} p{i}", "seconds": 4} for i in range(4)])
        job_ids = [r["job_id"] for r in _results(api, batch["id"])]
        at = Timestamp()
        at.GetCurrentTime()

        events = [jobs_pb2.JobStatusChanged(job_id=job_id, state=jobs_pb2.JOB_STATE_FAILED, at=at, sequence=1,
                                            error_code="x") for job_id in job_ids]

        async def end_all(events: list[jobs_pb2.JobStatusChanged]) -> None:
            await asyncio.gather(*[store.apply_status(gateway.pool, event) for event in events])

        gateway.run(end_all(events))
        assert api.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed"
        deliveries = gateway.run(gateway.pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE payload::jsonb -> 'data' ->> 'id' = $1", batch["id"]))
        assert deliveries == 1
