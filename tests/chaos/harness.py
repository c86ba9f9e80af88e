"""Fault injection under load, and the checker that proves nothing was lost or charged twice.

A scenario runs a load of jobs from several tenants through the real platform while a fault is
injected at a random (seeded) moment; afterwards the checker reads the databases and the partner
API and asserts the platform's promises.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from reelforge_local.stack import Stack, Tenant
from tests.conftest import db_fetch

TERMINAL = {"completed", "failed", "cancelled", "expired"}


@dataclass
class Fault:
    name: str
    inject: Callable[[Stack], None]  # breaks something and brings it back


def kill_and_restart_service(name: str, down_seconds: float = 1.0) -> Fault:
    def inject(stack: Stack) -> None:
        service = stack.services[name]
        service.kill()
        time.sleep(down_seconds)
        service.restart(timeout=120)

    return Fault(f"kill -9 {name}", inject)


def kill_and_restart_kafka(down_seconds: float = 2.0) -> Fault:
    def inject(stack: Stack) -> None:
        assert stack.kafka is not None
        stack.kafka.kill()
        time.sleep(down_seconds)
        stack.kafka.restart()

    return Fault("kill -9 kafka", inject)


def kill_and_restart_postgres(down_seconds: float = 1.0) -> Fault:
    def inject(stack: Stack) -> None:
        assert stack.postgres is not None
        stack.postgres.kill()
        time.sleep(down_seconds)
        stack.postgres.restart()

    return Fault("kill -9 postgres", inject)


def each_service_in_turn() -> Fault:
    faults = [kill_and_restart_service(name) for name in
              ("gateway", "orchestrator", "render-adapter", "postprocess", "billing")]

    def inject(stack: Stack) -> None:
        for fault in faults:
            fault.inject(stack)

    return Fault("kill -9 each service in turn", inject)


@dataclass
class Outcome:
    scenario: str
    accepted: list[str] = field(default_factory=list)
    refused: int = 0  # 503s while a dependency was down (the client may retry; nothing was accepted)
    views: dict[str, dict[str, object]] = field(default_factory=dict)
    fault_done_at: float = 0.0
    first_completion_after_fault: float | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(1 for job in self.accepted if self.views.get(job, {}).get("status") not in TERMINAL)

    @property
    def recovery_seconds(self) -> float | None:
        if self.first_completion_after_fault is None:
            return None
        return max(0.0, self.first_completion_after_fault - self.fault_done_at)


def run(stack: Stack, tenants: list[Tenant], fault: Fault, jobs: int, seed: int, timeout: float = 300,
        seconds: int = 1) -> Outcome:
    rng = random.Random(seed)
    outcome = Outcome(fault.name)
    lock = threading.Lock()

    def submit(i: int) -> None:
        tenant = tenants[i % len(tenants)]
        body = {"prompt": f"Chaos job {i}: a purifier on a counter.", "seconds": seconds, "size": "640x360",
                "narration": f"Job {i}." if i % 2 else None, "seed": i}
        headers = {"Authorization": f"Bearer {tenant.api_key}"}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = httpx.post(f"{_gateway(stack)}/v1/jobs", json=body, headers=headers, timeout=10)
            except httpx.HTTPError:
                time.sleep(0.5)  # gateway restarting: nothing accepted, try again
                continue
            if response.status_code == 202:
                with lock:
                    outcome.accepted.append(response.json()["id"])
                return
            if response.status_code == 503:
                with lock:
                    outcome.refused += 1
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            outcome.violations.append(f"submit {i}: unexpected {response.status_code} {response.text[:200]}")
            return

    fault_at = rng.uniform(0.5, 3.0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        submissions = [pool.submit(submit, i) for i in range(jobs)]
        time.sleep(fault_at)
        fault.inject(stack)
        outcome.fault_done_at = time.monotonic()
        for submission in submissions:
            submission.result()
    _await_terminal(stack, tenants, outcome, timeout)
    check_invariants(stack, outcome)
    return outcome


def _gateway(stack: Stack) -> str:
    return stack.services["gateway"].url


def _await_terminal(stack: Stack, tenants: list[Tenant], outcome: Outcome, timeout: float) -> None:
    owner = {}
    by_id = {t.tenant_id: t for t in tenants}
    rows = db_fetch(stack, "gateway", "SELECT job_id, tenant_id FROM jobs WHERE job_id = ANY($1::text[])",
                    outcome.accepted)
    for row in rows:
        owner[row["job_id"]] = by_id[row["tenant_id"]]
    missing_rows = set(outcome.accepted) - owner.keys()
    if missing_rows:
        outcome.violations.append(f"{len(missing_rows)} accepted jobs have no row in the gateway")
    pending = set(owner)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            try:
                response = httpx.get(f"{_gateway(stack)}/v1/jobs/{job_id}", timeout=5,
                                     headers={"Authorization": f"Bearer {owner[job_id].api_key}"})
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            view = response.json()
            outcome.views[job_id] = view
            if view["status"] in TERMINAL:
                pending.discard(job_id)
                if view["status"] == "completed" and outcome.first_completion_after_fault is None:
                    outcome.first_completion_after_fault = time.monotonic()
        time.sleep(0.5)


def check_invariants(stack: Stack, outcome: Outcome) -> None:
    jobs = outcome.accepted
    if outcome.lost:
        outcome.violations.append(f"{outcome.lost} accepted jobs never reached a terminal state")
    charges = {r["job_id"]: r for r in db_fetch(
        stack, "billing",
        "SELECT job_id, count(*) FILTER (WHERE kind = 'settle') AS settles,"
        " count(*) FILTER (WHERE kind = 'reserve') AS reserves FROM ledger_transactions"
        " WHERE job_id = ANY($1::text[]) GROUP BY job_id", jobs)}
    for job_id in jobs:
        status = outcome.views.get(job_id, {}).get("status")
        settles = charges.get(job_id, {}).get("settles", 0)
        if status == "completed" and settles != 1:
            outcome.violations.append(f"{job_id} completed with {settles} settled charges")
        if status in {"failed", "cancelled", "expired"} and settles:
            outcome.violations.append(f"{job_id} {status} but charged")
        if charges.get(job_id, {}).get("reserves", 0) > 1:
            outcome.violations.append(f"{job_id} reserved more than once")
    unbalanced = db_fetch(stack, "billing", "SELECT coalesce(sum(amount), 0) AS total FROM ledger_entries")
    if unbalanced[0]["total"] != 0:
        outcome.violations.append(f"ledger does not balance: {unbalanced[0]['total']}")
    for schema in ("gateway", "orchestrator", "render", "postprocess"):
        deadline = time.monotonic() + 30
        while (left := db_fetch(stack, schema, "SELECT count(*) AS n FROM outbox")[0]["n"]) and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        if left:
            outcome.violations.append(f"{schema} outbox still holds {left} events")


def double_charges(outcome: Outcome) -> int:
    return sum(1 for v in outcome.violations if "settled charges" in v or "but charged" in v)


def rerenders(stack: Stack, outcome: Outcome) -> int:
    """Render attempts beyond the first (failover to another pool, or a QC re-render)."""
    rows = db_fetch(stack, "orchestrator", "SELECT coalesce(sum(greatest(render_attempt - 1, 0)), 0) AS extra"
                    " FROM jobs WHERE job_id = ANY($1::text[])", outcome.accepted)
    return int(rows[0]["extra"])


def table(stack: Stack, outcomes: list[Outcome]) -> str:
    lines = [f"{'scenario':<32} {'jobs':>5} {'503s':>5} {'lost':>5} {'re-renders':>10} {'double charges':>14} "
             f"{'recovery s':>10}"]
    for o in outcomes:
        recovery = f"{o.recovery_seconds:.1f}" if o.recovery_seconds is not None else "-"
        lines.append(f"{o.scenario:<32} {len(o.accepted):>5} {o.refused:>5} {o.lost:>5} {rerenders(stack, o):>10} "
                     f"{double_charges(o):>14} {recovery:>10}")
    return "\n".join(lines)
