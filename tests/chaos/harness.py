"""Fault injection under load, and the checker that proves nothing was lost or charged twice.

A scenario runs a load of jobs from several tenants through the real platform while a fault is
injected at a random (seeded) moment; afterwards the checker reads the databases and the partner
API and asserts the platform's promises.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from standardwebhooks import Webhook

from reelforge_local.stack import Stack, Tenant
from reelforge_render.fakes import fal
from reelforge_render.fakes.common import Behaviour, serving
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


def hanging_provider(fake_url: str, min_hung: int = 2, max_seconds: float = 60.0) -> Fault:
    """The fake provider keeps accepting jobs but never finishes them, until `min_hung` jobs hang there (or
    `max_seconds` pass); those renders must end with `timeout` at the provider's deadline."""

    def inject(stack: Stack) -> None:
        before = httpx.get(f"{fake_url}/_fake/stats", timeout=10).json()["stuck"]
        httpx.post(f"{fake_url}/_fake/behaviour", json={"stuck_rate": 1.0}, timeout=10).raise_for_status()
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            if httpx.get(f"{fake_url}/_fake/stats", timeout=10).json()["stuck"] - before >= min_hung:
                break
            time.sleep(0.2)
        httpx.post(f"{fake_url}/_fake/behaviour", json={"stuck_rate": 0.0}, timeout=10).raise_for_status()

    return Fault("provider hangs", inject)


FULL_DISK_MAX_BYTES = 4 * 1024**3  # filling a bigger filesystem would hurt the machine, not test the store


def full_disk(full_seconds: float) -> Fault:
    """Fills the content store's filesystem (which must be small: bench/chaos.py mounts a tmpfs there), holds
    it full, then frees it."""

    def inject(stack: Stack) -> None:
        stats = os.statvfs(stack.content_dir)
        if stats.f_blocks * stats.f_frsize > FULL_DISK_MAX_BYTES:
            raise RuntimeError(f"{stack.content_dir} is not on a small filesystem; mount one there first")
        filler = stack.content_dir / "tmp" / "chaos-filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        time.sleep(full_seconds)
        filler.unlink()

    return Fault("full disk (content store)", inject)


def receiver_down(receiver: Receiver, down_seconds: float) -> Fault:
    def inject(stack: Stack) -> None:
        receiver.down = True
        time.sleep(down_seconds)
        receiver.down = False

    return Fault("webhook receiver down", inject)


@contextlib.contextmanager
def fake_provider_first(stack: Stack, behaviour: Behaviour, name: str = "flaky-fal", slots: int = 6,
                        timeout_seconds: float = 1800.0, reload_seconds: float = 6.0) -> Iterator[str]:
    """Serves a fal queue fake (real HTTP) and routes the local model to it first, ahead of the animatic
    pool, which stays the failover. Yields the fake's URL; pauses the pool afterwards."""
    with serving(fal.create_app(behaviour)) as url:
        adapter = stack.services["render-adapter"]
        variable = "REELFORGE_RENDER_PROVIDERS"
        providers = json.loads(adapter.env.get(variable) or "{}")
        providers[name] = {
            "kind": "fal", "base_url": url, "api_key_env": "REELFORGE_CHAOS_FAL_KEY", "model": "fal-ai/veo3/fast",
            "poll_interval_seconds": 0.3, "price_micros_per_second": 40_000, "timeout_seconds": timeout_seconds,
            "allow_output_hosts": ["127.0.0.1/32", "::1/128"]}
        adapter.env.update({variable: json.dumps(providers), "REELFORGE_CHAOS_FAL_KEY": behaviour.api_key})
        adapter.stop()
        adapter.restart()
        stack.cli("orchestrator", "set-pool", name, "--provider", name, "--model", "animatic",
                  "--slots", str(slots), "--route-position", "0")
        time.sleep(reload_seconds)  # the orchestrator leader reloads pools and routes every 5 s
        try:
            yield url
        finally:
            stack.cli("orchestrator", "pool-mode", name, "pause")
            time.sleep(reload_seconds)


def provider_report(fake_url: str) -> dict[str, Any]:
    """What the fake saw: its counters, and the submission keys that created more than one job."""
    stats: dict[str, Any] = httpx.get(f"{fake_url}/_fake/stats", timeout=10).json()
    stats["duplicates"] = httpx.get(f"{fake_url}/_fake/submissions", timeout=10).json()["duplicates"]
    return stats


class Receiver:
    """A partner's webhook endpoint: answers 503 while `down`, otherwise verifies and records each delivery."""

    def __init__(self) -> None:
        self.down = False
        self.secrets: dict[str, str] = {}  # tenant_id -> signing secret
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.refused = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = receiver.accept(self.path.rsplit("/", 1)[-1], dict(self.headers.items()), body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accept(self, tenant_id: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            if self.down:
                self.refused += 1
                return 503
            try:
                event = Webhook(self.secrets[tenant_id]).verify(body, {k.lower(): v for k, v in headers.items()})
            except Exception:
                self.bad_signatures += 1
                return 400
            self.events.append(event)
            return 204

    def subscribe(self, stack: Stack, tenant: Tenant) -> None:
        response = httpx.post(f"{stack.gateway_url}/v1/webhook_endpoints",
                              json={"url": f"{self.base_url}/{tenant.tenant_id}",
                                    "event_types": ["job.completed", "job.failed"]},
                              headers={"Authorization": f"Bearer {tenant.api_key}"}, timeout=15)
        response.raise_for_status()
        self.secrets[tenant.tenant_id] = json.loads(response.text)["signing_secret"]

    def job_ids_with(self, event_type: str) -> dict[str, int]:
        with self._lock:
            events = list(self.events)
        seen: dict[str, int] = {}
        for event in events:
            if event["type"] == event_type:
                seen[event["data"]["id"]] = seen.get(event["data"]["id"], 0) + 1
        return seen

    def missing(self, outcome: Outcome, wait_seconds: float) -> dict[str, str]:
        """Jobs whose terminal event has not arrived within `wait_seconds`."""
        wanted = {job: f"job.{view['status']}" for job, view in outcome.views.items()
                  if view.get("status") in ("completed", "failed")}
        deadline = time.monotonic() + wait_seconds
        missing = dict(wanted)
        while missing:
            missing = {job: kind for job, kind in missing.items() if job not in self.job_ids_with(kind)}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1)
        return missing


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
    throttled: int = 0  # 429s (a tenant's backlog or rate limit; the client waits Retry-After)
    duplicate_submits: int | None = None  # set by scenarios that route to a counting fake provider
    webhooks_missing: int | None = None  # set by scenarios with a webhook receiver
    views: dict[str, dict[str, object]] = field(default_factory=dict)
    # Time to recover: from the fault's end (the database's clock) to the first job the gateway saw
    # complete after it, read from the jobs' completed_at once all are terminal (so a long submission
    # phase after the fault is not counted as recovery).
    recovery_seconds: float | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(1 for job in self.accepted if self.views.get(job, {}).get("status") not in TERMINAL)


def run(stack: Stack, tenants: list[Tenant], fault: Fault, jobs: int, seed: int, timeout: float = 300,
        seconds: int = 1, fault_window: tuple[float, float] = (0.5, 3.0), submitters: int = 8) -> Outcome:
    rng = random.Random(seed)
    outcome = Outcome(fault.name)
    lock = threading.Lock()

    def submit(i: int) -> None:
        tenant = tenants[i % len(tenants)]
        body = {"prompt": f"Chaos job {i}: a purifier on a counter.", "seconds": seconds, "size": "640x360",
                "narration": f"Job {i}." if i % 2 else None, "seed": i}
        headers = {"Authorization": f"Bearer {tenant.api_key}"}
        deadline = time.monotonic() + 120 + jobs / 5
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
            if response.status_code in (503, 429):
                with lock:
                    if response.status_code == 503:
                        outcome.refused += 1
                    else:
                        outcome.throttled += 1
                time.sleep(min(5.0, float(response.headers.get("retry-after", "1"))))
                continue
            outcome.violations.append(f"submit {i}: unexpected {response.status_code} {response.text[:200]}")
            return

    fault_at = rng.uniform(*fault_window)
    with ThreadPoolExecutor(max_workers=submitters) as pool:
        submissions = [pool.submit(submit, i) for i in range(jobs)]
        time.sleep(fault_at)
        fault.inject(stack)
        fault_done = db_fetch(stack, "gateway", "SELECT now() AS at")[0]["at"]
        for submission in submissions:
            submission.result()
    _await_terminal(stack, tenants, outcome, timeout)
    first = db_fetch(stack, "gateway", "SELECT min(completed_at) AS at FROM jobs WHERE completed_at > $1"
                     " AND job_id = ANY($2::text[])", fault_done, outcome.accepted)[0]["at"]
    outcome.recovery_seconds = (first - fault_done).total_seconds() if first is not None else None
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
        time.sleep(0.5)


def check_invariants(stack: Stack, outcome: Outcome) -> None:
    jobs = outcome.accepted
    if outcome.lost:
        outcome.violations.append(f"{outcome.lost} accepted jobs never reached a terminal state")
    charges = {r["job_id"]: r for r in db_fetch(
        stack, "billing",
        "SELECT job_id, count(*) FILTER (WHERE kind = 'settle') AS settles,"
        " count(*) FILTER (WHERE kind = 'reserve') AS reserves,"
        " count(*) FILTER (WHERE kind = 'release') AS releases FROM ledger_transactions"
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
        if status in {"failed", "cancelled", "expired"} and charges.get(job_id, {}).get("reserves", 0) \
                and not charges[job_id]["releases"]:
            outcome.violations.append(f"{job_id} {status} but its credit is still held")
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
    lines = [f"{'scenario':<32} {'jobs':>5} {'lost':>5} {'dup submits':>11} {'double charges':>14} "
             f"{'recovery s':>10} {'503s':>5} {'429s':>5} {'re-renders':>10} {'hooks missing':>13}"]

    def maybe(value: int | None) -> str:
        return "-" if value is None else str(value)

    for o in outcomes:
        recovery = f"{o.recovery_seconds:.1f}" if o.recovery_seconds is not None else "-"
        lines.append(f"{o.scenario:<32} {len(o.accepted):>5} {o.lost:>5} {maybe(o.duplicate_submits):>11} "
                     f"{double_charges(o):>14} {recovery:>10} {o.refused:>5} {o.throttled:>5} "
                     f"{rerenders(stack, o):>10} {maybe(o.webhooks_missing):>13}")
    return "\n".join(lines)
