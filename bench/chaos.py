"""Full fault-injection run: a load of jobs from many tenants per scenario through the real stack, printing
the table (scenario, jobs, lost, duplicate submits, double charges, time to recover, and 503s, 429s,
re-renders, webhook events missing).

    ./run bench bench/chaos.py [--jobs 2000] [--tenants 20] [--only "full disk"]

The load renders on a fal queue fake (real HTTP) routed first, with latency, a 429 every few requests and a
5% failure rate; the local animatic pool is the failover. Every tenant has a webhook endpoint on a local
receiver that checks signatures. Scenarios, one after another on one stack: kill -9 of each service in turn,
of Kafka, of PostgreSQL (each restarted), the provider hanging (its renders time out and fail over), the
webhook receiver down, and a full content store (the content dir is a small tmpfs mounted for the run, then
filled up and freed; skipped where mounting is not allowed). After each: every accepted job terminal, no
double charge, failed jobs' credit released, ledger balanced, outboxes drained, every webhook delivered.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelforge_local.stack import Stack, Tenant  # noqa: E402
from reelforge_render.fakes.common import Behaviour  # noqa: E402
from tests.chaos import harness  # noqa: E402
from tests.conftest import CACHE  # noqa: E402

CONTENT_TMPFS = "2g"
PROVIDER_TIMEOUT_SECONDS = 20.0
# The partners' retry schedule compressed to fit the run, yet still outlasting the receiver's outage (14
# attempts: 0.5 s doubling to 20 s is about 200 s; production: 30 s doubling to 6 h, over 24 h).
RECEIVER_DOWN_SECONDS = 120.0
WEBHOOK_FAST_BACKOFF = {"REELFORGE_GATEWAY_WEBHOOK_BACKOFF_BASE_SECONDS": "0.5",
                        "REELFORGE_GATEWAY_WEBHOOK_BACKOFF_MAX_SECONDS": "20"}


def mount_small_disk(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={CONTENT_TMPFS}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        print(f"  cannot mount a tmpfs for the content store ({done.stderr.strip()}): full disk skipped")
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per scenario")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this")
    args = parser.parse_args()
    run_dir = CACHE / "bench-chaos"
    subprocess.run(["umount", "-l", str(run_dir / "content")], capture_output=True, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)
    small_disk = mount_small_disk(run_dir / "content")
    receiver = harness.Receiver()
    outcomes: list[harness.Outcome] = []
    began_run = time.monotonic()
    try:
        with Stack(run_dir, CACHE, progress=lambda line: print(f"  {line}", flush=True)) as stack:
            stack.start()
            gateway = stack.services["gateway"]
            gateway.env.update(WEBHOOK_FAST_BACKOFF)
            gateway.stop()
            gateway.restart()
            with ThreadPoolExecutor(max_workers=4) as pool:
                tenants = list(pool.map(lambda i: stack.create_tenant(f"bench-chaos-{i}", credit_usd="1000"),
                                        range(args.tenants)))
            for tenant in tenants:
                receiver.subscribe(stack, tenant)
            behaviour = Behaviour(latency_s=1.5, queue_s=0.3, throttle_every=4, retry_after_s=0.5,
                                  failure_rate=0.05, api_key="chaos-fal-key")
            with harness.fake_provider_first(stack, behaviour, "flaky-fal", slots=16,
                                             timeout_seconds=PROVIDER_TIMEOUT_SECONDS) as fake:
                scenarios = [harness.each_service_in_turn(), harness.kill_and_restart_kafka(),
                             harness.kill_and_restart_postgres(), harness.hanging_provider(fake, min_hung=10),
                             harness.receiver_down(receiver, down_seconds=RECEIVER_DOWN_SECONDS)]
                if small_disk:
                    scenarios.append(harness.full_disk(full_seconds=30))
                for number, fault in enumerate(s for s in scenarios if args.only in s.name):
                    outcomes.append(scenario(stack, tenants, fault, fake, receiver, args, number))
                    print(harness.table(stack, outcomes), flush=True)  # so far (a long run may be cut short)
            print()
            print(f"{args.jobs} jobs per scenario, {args.tenants} tenants; whole run "
                  f"{time.monotonic() - began_run:.0f} s")
            print(harness.table(stack, outcomes))
    finally:
        if small_disk:
            subprocess.run(["umount", "-l", str(run_dir / "content")], check=False)
    return 1 if any(o.violations for o in outcomes) else 0


def scenario(stack: Stack, tenants: list[Tenant], fault: harness.Fault, fake: str,
             receiver: harness.Receiver, args: argparse.Namespace, number: int) -> harness.Outcome:
    began = time.monotonic()
    print(f"scenario: {fault.name} ({args.jobs} jobs)…", flush=True)
    duplicates_before = len(harness.provider_report(fake)["duplicates"])
    outcome = harness.run(stack, tenants, fault, args.jobs, seed=args.seed + number, timeout=3600, seconds=4,
                          fault_window=(2.0, 20.0))
    report = harness.provider_report(fake)
    outcome.duplicate_submits = len(report["duplicates"]) - duplicates_before
    missing = receiver.missing(outcome, wait_seconds=180)
    outcome.webhooks_missing = len(missing)
    if missing:
        outcome.violations.append(f"{len(missing)} webhook events never delivered")
    if receiver.bad_signatures:
        outcome.violations.append(f"{receiver.bad_signatures} webhook deliveries with a bad signature")
    print(f"  done in {time.monotonic() - began:.0f}s; provider: {report['created']} created, {report['stuck']} hung,"
          f" {report['throttled']} 429s; violations: {outcome.violations[:5]}", flush=True)
    return outcome


if __name__ == "__main__":
    sys.exit(main())
