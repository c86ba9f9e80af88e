"""Group commit: many submissions in one transaction, each keeping its own idempotency and errors."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from reelforge_gateway import store
from reelforge_gateway.group_commit import GroupCommit
from services.gateway.tests.harness import Gateway


def _job(tenant_id: str, prompt: str = "A lamp") -> store.NewJob:
    return store.NewJob(tenant_id=tenant_id, model="animatic", prompt=prompt, seconds=4, width=1280, height=720,
                        narration=None, voice="en-us", seed=1, metadata={"customer": "c-1"})


def _render(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": row["job_id"], "prompt": row["prompt"], "status": row["state"]}


def _key(key: str, body: str) -> store.Idempotency:
    return store.Idempotency(key=key, request_hash=body)


def test_a_group_keeps_each_request_its_own_answer(gateway: Gateway) -> None:
    async def burst() -> list[Any]:
        group = GroupCommit(gateway.pool, writers=1)
        tenant = gateway.tenant_id
        calls = [group.submit(_job(tenant, f"plain {n}"), _render, 202, None) for n in range(20)]
        calls += [group.submit(_job(tenant, "keyed"), _render, 202, _key("k-1", "body-a")) for _ in range(10)]
        calls.append(group.submit(_job(tenant, "other"), _render, 202, _key("k-1", "body-b")))
        return await asyncio.gather(*calls, return_exceptions=True)

    results = gateway.run(burst())
    plain, keyed, other = results[:20], results[20:30], results[30]
    assert all(isinstance(r, store.Submitted) and not r.replayed for r in plain)
    assert len({r.body["id"] for r in plain}) == 20
    assert {r.body["prompt"] for r in plain} == {f"plain {n}" for n in range(20)}
    assert len({r.body["id"] for r in keyed}) == 1
    assert sum(not r.replayed for r in keyed) == 1
    assert isinstance(other, store.IdempotencyKeyReused)
    count = gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs"))
    events = gateway.run(gateway.pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'jobs.v1.submitted'"))
    assert (count, events) == (21, 21)


def test_a_failing_row_fails_only_its_request(gateway: Gateway) -> None:
    async def burst() -> list[Any]:
        group = GroupCommit(gateway.pool, writers=1)
        calls = [group.submit(_job(gateway.tenant_id, f"good {n}"), _render, 202, None) for n in range(5)]
        calls.insert(2, group.submit(_job("ten_missing"), _render, 202, None))  # no such tenant: FK violation
        return await asyncio.gather(*calls, return_exceptions=True)

    results = gateway.run(burst())
    assert isinstance(results[2], asyncpg.ForeignKeyViolationError)
    good = [r for n, r in enumerate(results) if n != 2]
    assert all(isinstance(r, store.Submitted) for r in good)
    ids = [r.body["id"] for r in good]
    stored = gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs WHERE job_id = ANY($1::text[])", ids))
    events = gateway.run(gateway.pool.fetchval("SELECT count(*) FROM outbox"))
    assert (stored, events) == (5, 5)


@pytest.mark.parametrize("writers", [1, 2])
def test_duplicates_across_groups_make_one_job(gateway: Gateway, writers: int) -> None:
    async def waves() -> list[store.Submitted]:
        group = GroupCommit(gateway.pool, writers=writers, max_group=3)
        return list(await asyncio.gather(*[
            group.submit(_job(gateway.tenant_id, "same"), _render, 202, _key(f"wave-{writers}", "body"))
            for _ in range(12)
        ]))

    results = gateway.run(waves())
    assert len({r.body["id"] for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
