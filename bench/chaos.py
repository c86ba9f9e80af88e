"""Full fault-injection run: a load of jobs from many tenants per scenario, printing the table
(scenario, jobs, 503s, lost, re-renders, double charges, recovery time).

    ./run bench bench/chaos.py [--jobs 200] [--tenants 20]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reelforge_local.stack import Stack  # noqa: E402
from tests.chaos import harness  # noqa: E402
from tests.conftest import CACHE  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200, help="jobs per scenario")
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    scenarios = [harness.each_service_in_turn(), harness.kill_and_restart_kafka(), harness.kill_and_restart_postgres()]
    run_dir = CACHE / "bench-chaos"
    shutil.rmtree(run_dir, ignore_errors=True)
    outcomes = []
    with Stack(run_dir, CACHE, progress=lambda line: print(f"  {line}", flush=True)) as stack:
        stack.start()
        tenants = [stack.create_tenant(f"bench-chaos-{i}", credit_usd="100") for i in range(args.tenants)]
        for number, fault in enumerate(scenarios):
            began = time.monotonic()
            print(f"scenario: {fault.name} ({args.jobs} jobs)…", flush=True)
            outcomes.append(harness.run(stack, tenants, fault, args.jobs, seed=args.seed + number, timeout=1800))
            print(f"  done in {time.monotonic() - began:.0f}s; violations: {outcomes[-1].violations[:5]}", flush=True)
        print()
        print(harness.table(stack, outcomes))
    return 1 if any(o.violations for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
