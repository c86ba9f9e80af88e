"""Idempotency-Key with payment-API semantics, against a real gateway and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx

from services.gateway.tests.harness import Gateway

JOB = {"prompt": "A water purifier", "seconds": 4, "size": "1280x720", "metadata": {"customer": "c-1"}}


def _headers(gateway: Gateway, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.api_key}", "Idempotency-Key": key}


def _count(gateway: Gateway, sql: str, *args: object) -> int:
    return int(gateway.run(gateway.pool.fetchval(sql, *args)))


def test_fifty_concurrent_duplicates_make_one_job(gateway: Gateway) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await asyncio.gather(*[
                client.post("/v1/jobs", json=JOB, headers=_headers(gateway, "order-1234")) for _ in range(50)
            ])

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [202] * 50, [r.text for r in responses if r.status_code != 202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.text for r in responses}) == 1  # the very same answer, byte for byte
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    assert _count(gateway, "SELECT count(*) FROM jobs") == 1
    assert _count(gateway, "SELECT count(*) FROM outbox WHERE topic = 'jobs.v1.submitted'") == 1


def test_replay_returns_the_original_answer_even_after_changes(gateway: Gateway) -> None:
    first = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=_headers(gateway, "k-replay"))
    assert first.status_code == 202
    gateway.advance(first.json()["id"], "rendering", 30)
    # Key order and whitespace do not make a different request.
    reordered = {"size": "1280x720", "metadata": {"customer": "c-1"}, "seconds": 4.0, "prompt": "A water purifier"}
    again = httpx.post(f"{gateway.url}/v1/jobs", json=reordered, headers=_headers(gateway, "k-replay"))
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"


def test_same_key_different_body_is_refused(gateway: Gateway) -> None:
    assert httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=_headers(gateway, "k-1")).status_code == 202
    other = httpx.post(f"{gateway.url}/v1/jobs", json={**JOB, "seconds": 8}, headers=_headers(gateway, "k-1"))
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "idempotency_key_reused"
    # The same key on another route is another request too, and gets the OpenAI error shape there.
    video = httpx.post(f"{gateway.url}/v1/videos", json={"prompt": "x"}, headers=_headers(gateway, "k-1"))
    assert video.status_code == 422
    assert video.json()["error"]["code"] == "idempotency_key_reused"
    assert _count(gateway, "SELECT count(*) FROM jobs") == 1


def test_keys_are_per_tenant(gateway: Gateway) -> None:
    _, other_key = gateway.new_tenant("other")
    mine = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=_headers(gateway, "shared"))
    theirs = httpx.post(f"{gateway.url}/v1/jobs", json=JOB,
                        headers={"Authorization": f"Bearer {other_key}", "Idempotency-Key": "shared"})
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]


def test_invalid_key_and_no_key(gateway: Gateway) -> None:
    bad = httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=_headers(gateway, "x" * 300))
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_idempotency_key"
    auth = {"Authorization": f"Bearer {gateway.api_key}"}
    ids = {httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=auth).json()["id"] for _ in range(2)}
    assert len(ids) == 2  # without a key, two requests are two jobs


def test_keys_expire_after_their_retention(gateway: Gateway) -> None:
    from reelforge_gateway import store

    assert httpx.post(f"{gateway.url}/v1/jobs", json=JOB, headers=_headers(gateway, "old")).status_code == 202
    assert gateway.run(store.forget_idempotency_keys(gateway.pool, 24)) == 0
    gateway.run(gateway.pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    assert gateway.run(store.forget_idempotency_keys(gateway.pool, 24)) == 1
    fresh = httpx.post(f"{gateway.url}/v1/jobs", json={**JOB, "seconds": 8}, headers=_headers(gateway, "old"))
    assert fresh.status_code == 202
