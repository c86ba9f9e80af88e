"""Webhooks under faults: the partners' receiver is down while jobs finish and the gateway is killed
with -9 in the middle. Afterwards every finished job's event has arrived at least once, with a valid
Standard Webhooks signature, and the platform's other invariants hold (tests/chaos/harness.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from reelforge_local.stack import Stack
from tests.chaos import harness

JOBS = 12
RECEIVER_DOWN_SECONDS = 15.0
# Compressed retry schedule for this test (production: 30 s doubling to 6 h over 14 attempts, > 24 h).
FAST_BACKOFF = {"REELFORGE_GATEWAY_WEBHOOK_BACKOFF_BASE_SECONDS": "0.5",
                "REELFORGE_GATEWAY_WEBHOOK_BACKOFF_MAX_SECONDS": "2"}


@pytest.fixture
def fast_retrying_gateway(stack: Stack) -> Iterator[None]:
    gateway = stack.services["gateway"]
    before = gateway.restart_with(dict(FAST_BACKOFF))
    try:
        yield
    finally:
        gateway.restart_with(before)


def test_every_finished_job_is_announced_once_the_receiver_is_back(stack: Stack, fast_retrying_gateway: None) -> None:
    receiver = harness.Receiver()
    tenants = [stack.create_tenant(f"hooks-{i}", credit_usd="10") for i in range(2)]
    for tenant in tenants:
        receiver.subscribe(stack, tenant)

    def receiver_down_and_gateway_killed(platform: Stack) -> None:
        receiver.down = True
        time.sleep(RECEIVER_DOWN_SECONDS / 2)
        gateway = platform.services["gateway"]
        gateway.kill()
        gateway.restart(timeout=120)
        time.sleep(RECEIVER_DOWN_SECONDS / 2)
        receiver.down = False

    outcome = harness.run(stack, tenants, harness.Fault("receiver down + kill -9 gateway",
                                                        receiver_down_and_gateway_killed), jobs=JOBS, seed=11)
    assert outcome.violations == [], outcome.violations
    assert len(outcome.accepted) == JOBS

    missing = receiver.missing(outcome, wait_seconds=90)
    print(f"\nwebhooks: {len(receiver.events)} delivered, {receiver.refused} refused while down, "
          f"{receiver.bad_signatures} bad signatures, {len(missing)} missing")
    assert receiver.refused > 0, "the receiver was never called while down: the scenario tested nothing"
    assert receiver.bad_signatures == 0
    assert not missing, f"events never delivered: {missing}"

