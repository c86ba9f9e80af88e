"""Rate limits shared by every gateway instance, and the tenant's concurrent-job and backlog limits."""

from __future__ import annotations

import grpc
import httpx
import pytest

from reelforge.jobs.v1 import jobs_service_pb2, jobs_service_pb2_grpc
from reelforge_gateway import tenancy
from reelforge_gateway.api.ratelimit import Limit, SharedRateLimiter
from services.gateway.tests.harness import Gateway
from services.gateway.tests.test_grpc_jobs import auth, error_code, grpc_app, grpc_target, status_details  # noqa: F401

JOB = {"prompt": "A water purifier", "seconds": 4}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _take_all(gateway: Gateway, limiters: list[SharedRateLimiter], limit: Limit, attempts: int) -> int:
    async def run() -> int:
        allowed = 0
        for i in range(attempts):
            taken = await limiters[i % len(limiters)].take([limit])
            assert taken is not None
            allowed += taken[0].allowed
        return allowed

    allowed: int = gateway.run(run())
    return allowed


def test_two_instances_share_one_budget(gateway: Gateway) -> None:
    """Two instances (two limiters) over one database never allow more than the limit together."""
    small = [SharedRateLimiter(gateway.pool), SharedRateLimiter(gateway.pool)]
    assert _take_all(gateway, small, Limit("key:small", 30), 60) == 30
    # Larger limits lease several tokens per statement; the total still stays within the limit
    # (plus what refills during the test), short of it by at most one unspent lease per instance.
    large = [SharedRateLimiter(gateway.pool), SharedRateLimiter(gateway.pool)]
    lease = large[0].lease_size(1200)
    assert lease > 1
    allowed = _take_all(gateway, large, Limit("key:large", 1200), 1500)
    assert 1200 - 2 * lease <= allowed <= 1200 + 40, allowed


def test_tenant_rate_limit_spans_its_keys(gateway: Gateway) -> None:
    other_key = tenancy_key(gateway)
    gateway.run(tenancy.update_tenant(gateway.pool, gateway.tenant_id, {"rate_limit_per_minute": 4}))
    answers = [httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key))
               for key in (gateway.api_key, other_key, gateway.api_key, other_key, other_key)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    limited = answers[-1]
    assert limited.json()["code"] == "tenant_rate_limited"
    assert limited.headers["ratelimit-limit"] == "4" and limited.headers["ratelimit-remaining"] == "0"
    assert 1 <= int(limited.headers["retry-after"]) <= 15
    # Another tenant has its own budget.
    _, third = gateway.new_tenant("third")
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(third)).status_code == 200


def tenancy_key(gateway: Gateway) -> str:
    created = gateway.run(tenancy.create_key(gateway.pool, gateway.tenant_id, ["jobs:read", "jobs:write"]))
    assert created is not None
    return created[1].plaintext


def test_per_key_limit_set_by_the_admin(gateway: Gateway) -> None:
    created = gateway.run(tenancy.create_key(gateway.pool, gateway.tenant_id, ["jobs:read"],
                                             rate_limit_per_minute=2))
    assert created is not None
    key = created[1].plaintext
    assert [httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key)).status_code for _ in range(3)] == [200, 200, 429]
    assert httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(gateway.api_key)).status_code == 200


def test_concurrent_jobs_limit(gateway: Gateway) -> None:
    gateway.run(tenancy.update_tenant(gateway.pool, gateway.tenant_id, {"max_concurrent_jobs": 2}))
    headers = bearer(gateway.api_key)
    first = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers={**headers, "Idempotency-Key": "k1"})
    second = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=headers)
    assert first.status_code == second.status_code == 202
    gateway.advance(second.json()["id"], "rendering", 10)  # running jobs count too
    third = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=headers)
    assert third.status_code == 429 and third.json()["code"] == "concurrency_limit_exceeded"
    assert third.headers["retry-after"] == "5" and third.headers["ratelimit-limit"] == "2"
    # A retry of an accepted request is not a new job: it still gets its original answer.
    replay = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers={**headers, "Idempotency-Key": "k1"})
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    # OpenAI-compatible creates share the limit.
    video = httpx.post(f"{gateway.url}/v1/videos", json={"prompt": "x"}, headers=headers)
    assert video.status_code == 429 and video.json()["error"]["type"] == "rate_limit_error"
    gateway.advance(second.json()["id"], "completed", 100)
    assert httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=headers).status_code == 202
    assert gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs")) == 3


def test_backlog_limit(gateway: Gateway) -> None:
    gateway.run(tenancy.update_tenant(gateway.pool, gateway.tenant_id, {"max_backlog_jobs": 1}))
    headers = bearer(gateway.api_key)
    first = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=headers)
    assert first.status_code == 202
    full = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=headers)
    assert full.status_code == 429 and full.json()["code"] == "backlog_full" and "retry-after" in full.headers
    gateway.advance(first.json()["id"], "admitted")  # no longer waiting
    assert httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=headers).status_code == 202


def test_grpc_answers_limits_with_resource_exhausted(gateway: Gateway, grpc_target: str) -> None:  # noqa: F811
    gateway.run(tenancy.update_tenant(gateway.pool, gateway.tenant_id, {"max_concurrent_jobs": 1}))
    with grpc.insecure_channel(grpc_target) as channel:
        stub = jobs_service_pb2_grpc.JobsServiceStub(channel)
        request = jobs_service_pb2.CreateJobRequest(prompt="x", seconds=4)
        stub.CreateJob(request, metadata=auth(gateway.api_key))
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateJob(request, metadata=auth(gateway.api_key))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_code(caught.value) == "concurrency_limit_exceeded"
        assert dict(caught.value.trailing_metadata())["retry-after"] == "5"  # type: ignore[attr-defined]
        assert any(getattr(d, "retry_delay", None) and d.retry_delay.seconds == 5 for d in status_details(caught.value))
        gateway.run(tenancy.update_tenant(gateway.pool, gateway.tenant_id,
                                          {"max_concurrent_jobs": None, "rate_limit_per_minute": 1}))
        stub.ListJobs(jobs_service_pb2.ListJobsRequest(), metadata=auth(gateway.api_key))
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListJobs(jobs_service_pb2.ListJobsRequest(), metadata=auth(gateway.api_key))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_code(caught.value) == "tenant_rate_limited"
