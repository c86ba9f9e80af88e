from __future__ import annotations

import itertools

import pytest

from reelforge.jobs.v1 import jobs_pb2
from reelforge_orchestrator.states import ALLOWED, TERMINAL, IllegalTransition, JobState, check_transition

HAPPY_PATH = [JobState.QUEUED, JobState.ADMITTED, JobState.RENDERING, JobState.POSTPROCESSING, JobState.COMPLETED]


def test_happy_path_is_allowed_and_progress_grows() -> None:
    for current, target in itertools.pairwise(HAPPY_PATH):
        check_transition(current, target)
    progress = [state.progress_percent for state in HAPPY_PATH]
    assert progress == sorted(progress)
    assert progress[-1] == 100


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_states_never_move(terminal: JobState) -> None:
    assert terminal.terminal
    for target in JobState:
        with pytest.raises(IllegalTransition):
            check_transition(terminal, target)


@pytest.mark.parametrize("state", [s for s in JobState if not s.terminal])
def test_every_live_state_can_fail_or_be_cancelled(state: JobState) -> None:
    assert {JobState.FAILED, JobState.CANCELLED} <= ALLOWED[state]


def test_no_skipping_admission_or_going_back_to_queue() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(JobState.QUEUED, JobState.RENDERING)
    with pytest.raises(IllegalTransition):
        check_transition(JobState.RENDERING, JobState.QUEUED)


def test_every_state_maps_to_the_wire_enum() -> None:
    for state in JobState:
        assert jobs_pb2.JobState.Name(state.to_proto()) == f"JOB_STATE_{state.name}"
