"""SIGTERM stops a service cleanly (exit 0, consumer group left, pools closed) and it comes back."""

from __future__ import annotations

import json

import httpx
import pytest

from reelforge_local.stack import Stack
from tests.e2e.helpers import submit, wait_for


@pytest.mark.parametrize("name", ["gateway", "billing"])
def test_sigterm_exits_cleanly_and_restarts(stack: Stack, api: httpx.Client, name: str) -> None:
    service = stack.services[name]

    assert service.stop(timeout=20) == 0
    last = [json.loads(line) for line in service.log_tail(5).splitlines() if line.startswith("{")]
    assert last and last[-1]["msg"] == "service stopped"

    service.restart()
    job = submit(api, prompt=f"After a graceful restart of {name}", seconds=1, size="640x360")
    assert wait_for(api, job["id"], {"completed", "failed"})["status"] == "completed"
