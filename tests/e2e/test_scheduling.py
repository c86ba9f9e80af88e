"""The scheduler in the running platform: contract caps under a burst, cancellation through Kafka,
and a kill -9 of the leading orchestrator with a standby taking over.

Scaled down from the issue's 500 jobs from 10 tenants to 24 jobs from 3 tenants (the animatic
renderer runs real FFmpeg on a shared 2-core machine); the same properties are checked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import pytest

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import topics
from reelforge_core.kafka import EventProducer, OutgoingRecord
from reelforge_local.stack import Stack
from tests.conftest import db_fetch
from tests.e2e.helpers import TERMINAL, submit, wait_for

ACTIVE = ("rendering", "postprocessing")


def _client(stack: Stack, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=15)


def _set_contract(stack: Stack, tenant_id: str, *args: str) -> None:
    stack.cli("orchestrator", "set-contract", tenant_id, *args)


def _active_by_tenant(stack: Stack, tenant_ids: list[str]) -> Counter[str]:
    rows = db_fetch(stack, "orchestrator", "SELECT tenant_id, count(*) AS n FROM jobs WHERE state = ANY($1)"
                    " AND tenant_id = ANY($2) GROUP BY tenant_id", list(ACTIVE), tenant_ids)
    return Counter({r["tenant_id"]: r["n"] for r in rows})


def test_contract_caps_hold_under_a_burst(stack: Stack) -> None:
    caps = {"burst-a": 1, "burst-b": 2, "burst-c": 3}
    tenants = {name: stack.create_tenant(name, credit_usd="20") for name in caps}
    for name, cap in caps.items():
        _set_contract(stack, tenants[name].tenant_id, "--max-concurrent", str(cap))
    time.sleep(6)  # the leader reloads contracts every 5 s
    ids: dict[str, str] = {}
    clients = {name: _client(stack, t.api_key) for name, t in tenants.items()}
    try:
        for i in range(8):
            for name, client in clients.items():
                ids[submit(client, prompt=f"burst {i}", seconds=1, size="640x360")["id"]] = name
        peak: Counter[str] = Counter()
        deadline = time.monotonic() + 240
        tenant_ids = [t.tenant_id for t in tenants.values()]
        by_id = {t.tenant_id: name for name, t in tenants.items()}
        while time.monotonic() < deadline:
            for tenant_id, n in _active_by_tenant(stack, tenant_ids).items():
                name = by_id[tenant_id]
                assert n <= caps[name], f"{name} has {n} jobs in flight, cap {caps[name]}"
                peak[name] = max(peak[name], n)
            states = db_fetch(stack, "orchestrator", "SELECT state FROM jobs WHERE job_id = ANY($1)", list(ids))
            if len(states) == len(ids) and all(s["state"] in TERMINAL for s in states):
                break
            time.sleep(0.05)
        for job_id, name in ids.items():
            assert wait_for(clients[name], job_id, TERMINAL, timeout=5)["status"] == "completed"
        assert peak["burst-c"] >= 2  # the caps were reached, not merely never tested
    finally:
        for client in clients.values():
            client.close()


async def _produce_cancel(stack: Stack, job_id: str, tenant_id: str) -> None:
    """Puts JobCancelRequested on Kafka as the gateway's outbox relay will (issue 5 adds the API)."""
    event = jobs_pb2.JobCancelRequested(job_id=job_id, tenant_id=tenant_id, reason="test cancel")
    producer = EventProducer(stack.bootstrap, "e2e-cancel")
    await producer.start()
    try:
        headers = {"event-id": str(uuid.uuid4()), "event-type": event.DESCRIPTOR.full_name, "tenant-id": tenant_id,
                   "content-type": "application/x-protobuf"}
        await producer.send_all([OutgoingRecord(topics.JOBS_CANCEL_REQUESTED, job_id.encode(),
                                                event.SerializeToString(), headers)])
    finally:
        await producer.stop()


def test_cancel_a_waiting_job_through_kafka(stack: Stack) -> None:
    tenant = stack.create_tenant("cancel-tenant", credit_usd="20")
    _set_contract(stack, tenant.tenant_id, "--max-concurrent", "1")
    time.sleep(6)
    with _client(stack, tenant.api_key) as api:
        first = submit(api, prompt="long one", seconds=6, size="640x360")
        second = submit(api, prompt="waits behind", seconds=1, size="640x360")
        wait_for(api, second["id"], {"admitted"}, timeout=60)
        asyncio.run(_produce_cancel(stack, second["id"], tenant.tenant_id))
        cancelled = wait_for(api, second["id"], TERMINAL, timeout=60)
        assert cancelled["status"] == "cancelled"
        assert wait_for(api, first["id"], TERMINAL, timeout=120)["status"] == "completed"
    reservation = db_fetch(stack, "billing", "SELECT state FROM reservations WHERE job_id = $1", second["id"])
    assert reservation == [{"state": "released"}]


@pytest.mark.timeout(600)
def test_standby_takes_over_after_kill_9_and_no_job_renders_twice(stack: Stack) -> None:
    tenant = stack.create_tenant("failover-tenant", credit_usd="20")
    _set_contract(stack, tenant.tenant_id, "--max-concurrent", "2")
    standby = stack.add_instance("orchestrator")
    leader = stack.services["orchestrator"]
    try:
        standby.restart()
        time.sleep(6)
        with _client(stack, tenant.api_key) as api:
            ids = [submit(api, prompt=f"failover {i}", seconds=1, size="640x360")["id"] for i in range(8)]
            wait_for(api, ids[0], {"rendering", "postprocessing", "completed"}, timeout=60)
            before = db_fetch(stack, "orchestrator", "SELECT epoch FROM leader_lease")[0]["epoch"]
            killed_at = time.time()
            leader.kill()
            deadline = time.monotonic() + 10
            lease = {}
            while time.monotonic() < deadline:
                lease = db_fetch(stack, "orchestrator", "SELECT epoch, since FROM leader_lease")[0]
                if lease["epoch"] > before:
                    break
                time.sleep(0.1)
            assert lease["epoch"] == before + 1, "the standby did not take over"
            assert lease["since"].timestamp() - killed_at < 5.0
            for job_id in ids:
                assert wait_for(api, job_id, TERMINAL, timeout=240)["status"] == "completed"
        renders = db_fetch(stack, "orchestrator", "SELECT job_id, count(*) AS n FROM job_transitions"
                           " WHERE state = 'rendering' AND job_id = ANY($1) GROUP BY job_id", ids)
        assert sorted(r["n"] for r in renders) == [1] * len(ids)
        attempts = db_fetch(stack, "orchestrator", "SELECT render_attempt FROM jobs WHERE job_id = ANY($1)", ids)
        assert {r["render_attempt"] for r in attempts} == {1}
    finally:
        leader.restart()  # back as the standby
        standby.stop()
        stack.instances["orchestrator"].remove(standby)
