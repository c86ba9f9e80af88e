"""The service process's watch over its extra HTTP processes: one that keeps dying stops the service (the
restart of a killed one is shown end to end in tests/e2e/test_http_workers.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import SecretStr

from reelforge_gateway.http_workers import Workers
from services.gateway.tests.conftest import free_port, make_settings


def test_a_worker_that_keeps_dying_stops_the_service(tmp_path: Path) -> None:
    # No database answers there: each worker fails at start and ends.
    settings = make_settings(database_url=SecretStr("postgresql://nobody@127.0.0.1:1/none"), content_dir=tmp_path)

    async def supervise() -> None:
        workers = Workers.start(settings, free_port(), 1)
        try:
            # Allowed no restart (a spawn costs seconds here): the first ending gives up.
            with pytest.raises(RuntimeError, match="ended 1 times"):
                await asyncio.wait_for(workers.supervise(check_seconds=0.1, max_restarts=0), 120)
            assert workers.restarts == 0
            assert all(process.exitcode not in (None, 0) for process in workers.processes)
        finally:
            await workers.stop()

    asyncio.run(supervise())
