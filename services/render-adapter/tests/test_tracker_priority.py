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


@pytest.mark.asyncio
async def test_a_render_tracked_again_while_its_step_runs_is_not_lost() -> None:
    """The adopt loop can find a render's row between the consumer's insert and its own track() call; the
    second track() must not replace the render whose step is running (its retry would then be dropped as
    stale, and the render never stepped again: seen in the 2,000-job chaos run)."""
    tracker = Tracker(None, None, {})  # type: ignore[arg-type]
    tracker.track(job("r1"))
    dispatch = asyncio.create_task(tracker._dispatch())
    try:
        await asyncio.sleep(0.02)
        taken = tracker._ready.get_nowait()[2]  # a worker took its step (submitting)
        tracker.track(job("r1"))  # the consumer, after the adopt loop
        await asyncio.sleep(0.02)
        assert tracker._ready.empty()  # one step at a time
        tracker._schedule(taken, 0.05)  # the step ends as a 429 does: try again shortly
        tracker._busy.discard("r1")
        await asyncio.sleep(0.2)
        assert tracker._ready.get_nowait()[2].render_id == "r1"
    finally:
        dispatch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatch
