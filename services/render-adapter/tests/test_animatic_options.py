"""The animatic provider's job options (shot list and fps in the JobSpec metadata), through the provider."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core.media import probe
from reelforge_render.animatic import RenderRejected, plan_scenes
from reelforge_render.providers.animatic import AnimaticProvider, animatic_spec
from reelforge_render.providers.base import JobStatus, Provider, ProviderJob

RunToEnd = Callable[[Provider, ProviderJob], Awaitable[JobStatus]]  # the run_to_end fixture (conftest.py)


def job_spec(**metadata: str) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(prompt="One. Two. Three.", seconds=2, width=320, height=180, seed=7, metadata=metadata)


def test_shot_list_replaces_the_prompts_sentences() -> None:
    spec = animatic_spec(job_spec(**{"animatic.shots": json.dumps(["Wide: the lake", "Close: a heron"])}))
    assert [scene.text for scene in plan_scenes(spec)] == ["Wide: the lake", "Close: a heron"]


def test_defaults_without_options() -> None:
    spec = animatic_spec(job_spec())
    assert (spec.shots, spec.fps, spec.seed) == (None, 24, 7)


@pytest.mark.parametrize(("option", "value"), [
    ("animatic.shots", "not json"), ("animatic.shots", '{"a": 1}'), ("animatic.shots", "[1, 2]"),
    ("animatic.fps", "twelve"),
])
def test_malformed_options_are_rejected(option: str, value: str) -> None:
    with pytest.raises(RenderRejected, match=option):
        animatic_spec(job_spec(**{option: value}))



@pytest.mark.asyncio
async def test_provider_renders_the_shot_list_at_the_asked_fps(tmp_path: Path, run_to_end: RunToEnd) -> None:
    provider = AnimaticProvider(max_pixels=1920 * 1080, timeout_seconds=120, scratch=tmp_path)
    job = ProviderJob("j/r1", job_spec(**{"animatic.shots": json.dumps(["A", "B"]), "animatic.fps": "12"}))
    status = await run_to_end(provider, job)
    assert status.state == "succeeded", status.error
    out = tmp_path / "out.mp4"
    await provider.fetch_output(job, status, out)
    info = await probe(out)
    video = info.video
    assert video is not None and (video.width, video.height) == (320, 180)
    assert video.fps == pytest.approx(12)
    assert info.duration_s == pytest.approx(2, abs=0.1)


@pytest.mark.asyncio
async def test_provider_answers_a_bad_option_as_invalid_input(tmp_path: Path, run_to_end: RunToEnd) -> None:
    provider = AnimaticProvider(max_pixels=1920 * 1080, timeout_seconds=120, scratch=tmp_path)
    status = await run_to_end(provider, ProviderJob("j/r2", job_spec(**{"animatic.fps": "0"})))
    assert status.state == "failed" and status.error is not None and status.error.code == "invalid_input"
