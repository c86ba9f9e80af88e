"""The job state machine. Pure: which transitions exist and what progress each state means."""

from __future__ import annotations

from enum import StrEnum

from reelforge.jobs.v1 import jobs_pb2


class JobState(StrEnum):
    QUEUED = "queued"
    ADMITTED = "admitted"
    RENDERING = "rendering"
    POSTPROCESSING = "postprocessing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def progress_percent(self) -> int:
        return _PROGRESS[self]

    def to_proto(self) -> jobs_pb2.JobState.ValueType:
        return jobs_pb2.JobState.Value(f"JOB_STATE_{self.name}")


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED})
_ENDINGS = {JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.ADMITTED} | _ENDINGS),
    JobState.ADMITTED: frozenset({JobState.RENDERING} | _ENDINGS),
    JobState.RENDERING: frozenset({JobState.POSTPROCESSING, JobState.RENDERING} | _ENDINGS),
    JobState.POSTPROCESSING: frozenset({JobState.COMPLETED, JobState.RENDERING, JobState.FAILED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.EXPIRED: frozenset(),
}

_PROGRESS = {
    JobState.QUEUED: 0,
    JobState.ADMITTED: 5,
    JobState.RENDERING: 10,
    JobState.POSTPROCESSING: 70,
    JobState.COMPLETED: 100,
    JobState.FAILED: 100,
    JobState.CANCELLED: 100,
    JobState.EXPIRED: 100,
}


class IllegalTransition(Exception):
    pass


def check_transition(current: JobState, target: JobState) -> None:
    if target not in ALLOWED[current]:
        raise IllegalTransition(f"{current} -> {target} is not a valid job transition")
