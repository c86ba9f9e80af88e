"""Fixtures shared by the render-adapter's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from reelforge_render.providers.base import JobStatus, Provider, ProviderJob

RunToEnd = Callable[[Provider, ProviderJob], Awaitable[JobStatus]]


async def _run_to_end(provider: Provider, job: ProviderJob) -> JobStatus:
    await provider.submit(job)
    for _ in range(600):
        status = await provider.status(job)
        if status.terminal:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("the render did not finish within 60 s")


@pytest.fixture
def run_to_end() -> RunToEnd:
    """Submits a job to a provider and polls it until it ends."""
    return _run_to_end
