"""Reduced fault-injection run for CI: a load of jobs while a process is killed; nothing lost, nothing
charged twice, ledger balanced, outboxes drained. The full run is bench/chaos.py."""

from __future__ import annotations

import pytest

from reelforge_local.stack import Stack
from tests.chaos import harness

JOBS = 16
SCENARIOS = [
    harness.kill_and_restart_service("orchestrator"),
    harness.kill_and_restart_kafka(),
    harness.kill_and_restart_postgres(),
]


@pytest.mark.parametrize("fault", SCENARIOS, ids=[f.name for f in SCENARIOS])
def test_no_job_lost_and_none_charged_twice(stack: Stack, fault: harness.Fault) -> None:
    tenants = [stack.create_tenant(f"chaos-{i}", credit_usd="10") for i in range(4)]
    outcome = harness.run(stack, tenants, fault, jobs=JOBS, seed=7)
    print("\n" + harness.table(stack, [outcome]))
    assert len(outcome.accepted) == JOBS
    assert outcome.violations == []
