"""When a postprocess QC failure sends a job back for a new render (pure decision)."""

from __future__ import annotations

from reelforge.jobs.v1 import jobs_pb2
from reelforge.postprocess.v1 import postprocess_pb2
from reelforge_orchestrator.states import JobState
from reelforge_orchestrator.store import Job
from reelforge_orchestrator.workflow import QC_RENDER_ATTEMPTS, wants_rerender


def job(attempt: int) -> Job:
    return Job("j1", "t1", jobs_pb2.JobSpec(), JobState.POSTPROCESSING, 4, attempt, "cas://x", 0)


def test_qc_failure_that_a_render_may_fix_rerenders_until_the_attempts_run_out() -> None:
    black = postprocess_pb2.PostprocessResult(ok=False, error_code="qc_failed", rerender=True)
    assert wants_rerender(job(1), black)
    assert not wants_rerender(job(QC_RENDER_ATTEMPTS), black)


def test_other_failures_and_successes_never_rerender() -> None:
    loudness = postprocess_pb2.PostprocessResult(ok=False, error_code="qc_failed", rerender=False)
    broken = postprocess_pb2.PostprocessResult(ok=False, error_code="media_tool_failed")
    done = postprocess_pb2.PostprocessResult(ok=True, rerender=True)
    assert not any(wants_rerender(job(1), result) for result in (loudness, broken, done))
