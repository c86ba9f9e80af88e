"""Under overload the tracker serves cancels, then submissions, then routine polls (each kind in due order)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from reelforge.jobs.v1 import jobs_pb2
from reelforge_render.store import InFlight
from reelforge_render.tracker import Tracker


def job(render_id: str, external_id: str = "", cancel: bool = False) -> InFlight:
    return InFlight(render_id=render_id, job_id=render_id, tenant_id="t", provider="p", spec=jobs_pb2.JobSpec(),
                    deadline=0.0, external_id=external_id, cancel_requested=cancel)


@pytest.mark.asyncio
async def test_cancels_and_submissions_go_before_due_polls() -> None:
    tracker = Tracker(None, None, {})  # type: ignore[arg-type]  # dispatching alone needs no pool or store
    for i in range(5):
        tracker.track(job(f"poll{i}", external_id=f"x{i}"))
    tracker.track(job("submit"))
    tracker.track(job("cancel", external_id="xc", cancel=True))
    dispatch = asyncio.create_task(tracker._dispatch())
    await asyncio.sleep(0.05)
    dispatch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dispatch
    order = [tracker._ready.get_nowait()[2].render_id for _ in range(7)]
    assert order == ["cancel", "submit", "poll0", "poll1", "poll2", "poll3", "poll4"]
