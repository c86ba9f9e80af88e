"""A gateway with HTTP_WORKERS=2: two processes serve the REST port (SO_REUSEPORT). Whichever process a
connection lands on, submits and reads work, concurrent duplicates make one job, and a key's rate limit
holds across both (it is a PostgreSQL bucket); a worker that dies is restarted by the service process.

Which process answered is told by /metrics on the same connection (each process serves its own, with its
own process_start_time_seconds): a fresh client per probe lets the kernel pick a process each time."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reelforge_local.stack import ServiceProcess, Stack, Tenant
from tests.conftest import db_fetch

RATE_LIMIT = 30  # requests per minute of the rate limit test's key (its own limit, set by the admin API)
T = TypeVar("T")
JOB = {"prompt": "A lamp on a desk", "seconds": 2, "size": "640x360"}


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[ServiceProcess]:
    process = stack.add_instance("gateway")
    process.env["REELFORGE_GATEWAY_HTTP_WORKERS"] = "2"
    try:
        process.restart()
        yield process
    finally:
        process.stop()
        stack.instances["gateway"].remove(process)


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return stack.create_tenant("http-workers", credit_usd="0")  # its jobs fail at admission: no render load


def bearer(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class Connection:
    """One keep-alive HTTP connection (stdlib: a fresh connection per probe costs little)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=15)

    def call(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> Answer:
        payload = json.dumps(body).encode() if body is not None else None
        sent = {**headers, "Content-Type": "application/json"} if payload is not None else headers
        self._conn.request(method, path, body=payload, headers=sent)
        response = self._conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      json.loads(raw) if "json" in kind else raw.decode())

    def started_at(self) -> float:
        """process_start_time_seconds of the process serving this connection (its own /metrics)."""
        metrics = self.call("GET", "/metrics", {}).body
        line = next(line for line in metrics.splitlines() if line.startswith("process_start_time_seconds "))
        return float(line.split()[1])

    def close(self) -> None:
        self._conn.close()


def on_one_connection(url: str, calls: Callable[[Connection], T]) -> tuple[float, T]:
    """(the answering process's start time, calls(connection)) over one fresh connection."""
    conn = Connection(url)
    try:
        return conn.started_at(), calls(conn)
    finally:
        conn.close()


def worker_pids(gateway: ServiceProcess) -> list[int]:
    assert gateway.pid is not None
    children = Path(f"/proc/{gateway.pid}/task/{gateway.pid}/children").read_text().split()
    return [int(pid) for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_submits_and_reads_work_through_either_process(gateway: ServiceProcess, tenant: Tenant) -> None:
    headers = bearer(tenant)
    submitted: dict[float, list[str]] = {}
    for _ in range(40):
        process, response = on_one_connection(gateway.url, lambda c: c.call("POST", "/v1/jobs", headers, JOB))
        assert response.status == 202, response.body
        submitted.setdefault(process, []).append(response.body["id"])
        if len(submitted) == 2 and all(len(ids) >= 2 for ids in submitted.values()):
            break
    assert len(submitted) == 2, "every connection landed on one process"
    every_job = {job_id for ids in submitted.values() for job_id in ids}
    read_by: dict[float, set[str]] = {}
    for _ in range(40):
        def read_all(conn: Connection) -> set[str]:
            for job_id in every_job:
                assert conn.call("GET", f"/v1/jobs/{job_id}", headers).body["id"] == job_id
            return {job["id"] for job in conn.call("GET", "/v1/jobs?limit=100", headers).body["data"]}

        process, listed = on_one_connection(gateway.url, read_all)
        read_by[process] = listed
        if len(read_by) == 2:
            break
    assert set(read_by) == set(submitted)  # both processes read every job, whichever one took it
    assert all(every_job <= listed for listed in read_by.values())


def test_concurrent_duplicates_through_both_processes_make_one_job(stack: Stack, gateway: ServiceProcess,
                                                                   tenant: Tenant) -> None:
    headers = {**bearer(tenant), "Idempotency-Key": f"dup-{uuid.uuid4().hex}"}
    count = "SELECT count(*) AS n FROM jobs WHERE tenant_id = $1"
    before = db_fetch(stack, "gateway", count, tenant.tenant_id)[0]["n"]

    def send(_: int) -> tuple[float, Answer]:
        return on_one_connection(gateway.url, lambda c: c.call("POST", "/v1/jobs", headers, JOB))

    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(send, range(50)))
    assert len({process for process, _ in answers}) == 2
    assert {response.status for _, response in answers} == {202}, [r.body for _, r in answers]
    assert len({response.body["id"] for _, response in answers}) == 1
    assert db_fetch(stack, "gateway", count, tenant.tenant_id)[0]["n"] == before + 1


def test_a_keys_rate_limit_is_shared_by_both_processes(stack: Stack, gateway: ServiceProcess,
                                                       tenant: Tenant) -> None:
    created = Connection(gateway.url).call("POST", f"/v1/admin/tenants/{tenant.tenant_id}/keys",
                                           {"Authorization": f"Bearer {stack.admin_key()}"},
                                           {"rate_limit_per_minute": RATE_LIMIT})
    assert created.status == 201, created.body
    headers = {"Authorization": f"Bearer {created.body['key']}"}
    began = time.monotonic()
    answers = [on_one_connection(gateway.url, lambda c: c.call("GET", "/v1/jobs", headers))
               for _ in range(RATE_LIMIT * 3)]
    elapsed = time.monotonic() - began
    assert len({process for process, _ in answers}) == 2
    allowed = sum(1 for _, response in answers if response.status == 200)
    limited = [response for _, response in answers if response.status == 429]
    assert allowed + len(limited) == len(answers)
    # The bucket holds RATE_LIMIT and refills RATE_LIMIT a minute; each process may hold one leased token.
    refilled = int(elapsed * RATE_LIMIT / 60) + 1
    assert RATE_LIMIT - 2 <= allowed <= RATE_LIMIT + 2 + refilled, (allowed, elapsed)
    assert all(int(r.headers["retry-after"]) >= 1 and r.headers["ratelimit-limit"] == str(RATE_LIMIT)
               for r in limited)


def test_a_killed_worker_is_restarted(gateway: ServiceProcess, tenant: Tenant) -> None:
    headers = bearer(tenant)
    [worker] = worker_pids(gateway)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 90  # a loaded machine imports a new process slowly; a pass ends early
    while time.monotonic() < deadline and worker_pids(gateway) in ([], [worker]):
        time.sleep(0.1)
    [replacement] = worker_pids(gateway)
    assert replacement != worker and gateway.proc is not None and gateway.proc.poll() is None
    # The replacement serves the port again: connections land on two processes once more.
    seen: set[float] = set()
    while time.monotonic() < deadline and len(seen) < 2:
        process, response = on_one_connection(gateway.url, lambda c: c.call("GET", "/v1/jobs", headers))
        if response.status == 200:
            seen.add(process)
        else:
            time.sleep(0.1)
    assert len(seen) == 2
    assert "http worker ended; restarting it" in gateway.log_path.read_text(errors="replace")
