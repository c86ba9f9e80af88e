"""Ken Burns on a reference image and xfade transitions: planned exactly, then checked in real renders
with ffprobe and decoded pixels (small frames, so each render takes a fraction of a second)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core.content import ContentStore
from reelforge_core.media import FFMPEG, FFPROBE, file_arg, run_tool, sha256_file
from reelforge_render.animatic import AnimaticSpec, RenderRejected, camera_path, plan_scenes, render_animatic, validate
from reelforge_render.providers.animatic import AnimaticProvider
from reelforge_render.providers.base import JobStatus, Provider, ProviderJob

RunToEnd = Callable[[Provider, ProviderJob], Awaitable[JobStatus]]  # the run_to_end fixture (conftest.py)

W, H, FPS = 160, 90, 12
SPEC = AnimaticSpec(prompt="unused", seconds=2, width=W, height=H, fps=FPS, seed=1, shots=["A"])


@pytest.fixture(scope="module")
def ramp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x360 PNG whose brightness rises from left (black) to right (white)."""
    path = tmp_path_factory.mktemp("ref") / "ramp.png"
    source = "nullsrc=s=640x360,geq=lum='X*255/W':cb=128:cr=128"
    asyncio.run(run_tool([FFMPEG, "-v", "error", "-f", "lavfi", "-i", source, "-frames:v", "1", file_arg(path)], 30))
    return path


async def frames_rgb(path: Path) -> list[bytes]:
    """Every decoded frame as packed RGB24."""
    proc = await asyncio.create_subprocess_exec(
        FFMPEG, "-v", "error", "-i", file_arg(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
        stdout=asyncio.subprocess.PIPE)
    raw, _ = await proc.communicate()
    size = W * H * 3
    assert proc.returncode == 0 and len(raw) % size == 0
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def region_mean(frame: bytes, x0: int, y0: int, x1: int, y1: int) -> tuple[float, float, float]:
    """Mean R, G, B over a rectangle (kept clear of the centred text and the bottom-right caption)."""
    sums, count = [0, 0, 0], 0
    for y in range(y0, y1):
        row = frame[(y * W + x0) * 3:(y * W + x1) * 3]
        for c in range(3):
            sums[c] += sum(row[c::3])
        count += x1 - x0
    return (sums[0] / count, sums[1] / count, sums[2] / count)


async def frame_count_and_duration(path: Path) -> tuple[int, float]:
    out = await run_tool([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames:format=duration", "-of", "json", file_arg(path)], 30)
    doc = json.loads(out)
    return int(doc["streams"][0]["nb_read_frames"]), float(doc["format"]["duration"])


def seed_with(spec: AnimaticSpec, motion: str) -> AnimaticSpec:
    return next(replace(spec, seed=s) for s in range(200) if plan_scenes(replace(spec, seed=s))[0].motion == motion)


# --- planning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    replace(SPEC, shots=["a", "b", "c", "d"], seconds=8, fps=24),
    replace(SPEC, shots=["a", "b"], seconds=1, fps=5),
    replace(SPEC, shots=["a", "b", "c"], seconds=1.5, fps=2),
])
def test_transitions_fit_between_scenes_and_keep_the_length(spec: AnimaticSpec) -> None:
    scenes = plan_scenes(spec)
    assert sum(s.frames for s in scenes) == spec.total_frames
    assert scenes[-1].tail_frames == 0 and scenes[-1].transition == ""
    for a, b in itertools.pairwise(scenes):
        # the tail overlaps the next scene's first frames and never reaches past its middle
        assert 0 <= a.tail_frames <= min(a.frames, b.frames) // 2
        assert a.transition in ("fade", "wipeleft", "wiperight", "slideleft", "slideup", "circleopen",
                                "smoothleft", "dissolve")


def test_transitions_are_seeded_or_fixed() -> None:
    spec = replace(SPEC, shots=[str(i) for i in range(8)], seconds=8)
    by_seed = {tuple(s.transition for s in plan_scenes(replace(spec, seed=seed))) for seed in range(6)}
    assert len(by_seed) > 1
    assert {s.transition for s in plan_scenes(replace(spec, transition="wipeleft"))} == {"wipeleft", ""}
    with pytest.raises(RenderRejected, match="transition must be one of"):
        validate(replace(spec, transition="swirl"))


def test_camera_paths_stay_inside_the_picture() -> None:
    for seed in range(40):
        for scene in plan_scenes(replace(SPEC, shots=["a", "b", "c"], seed=seed)):
            for zoom, cx, cy in camera_path(scene):
                half = 0.5 / zoom
                assert zoom >= 1 and half <= cx <= 1 - half + 1e-9 and half <= cy <= 1 - half + 1e-9


# --- renders ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ken_burns_pans_across_the_reference(tmp_path: Path, ramp: Path) -> None:
    """pan_left moves the picture left: the ramp's brighter right side comes into view over the scene."""
    spec = replace(seed_with(SPEC, "pan_left"), reference=ramp)
    await render_animatic(spec, tmp_path / "pan.mp4")
    frames = await frames_rgb(tmp_path / "pan.mp4")
    strip = [region_mean(f, 0, 0, W, 12)[1] for f in frames]  # the top rows, above the text
    assert len(frames) == spec.total_frames
    assert strip[-1] - strip[0] > 15  # the whole pan: 18% of the picture's width, about 46 levels
    assert all(b >= a - 1.5 for a, b in itertools.pairwise(strip))  # steadily, no jumps back
    assert len(set(frames)) > len(frames) // 2  # frames differ over time


@pytest.mark.asyncio
async def test_ken_burns_zoom_and_determinism(tmp_path: Path, ramp: Path) -> None:
    spec = replace(seed_with(SPEC, "zoom_in"), reference=ramp)
    await render_animatic(spec, tmp_path / "a.mp4")
    await render_animatic(spec, tmp_path / "b.mp4")
    await render_animatic(replace(spec, seed=spec.seed + 1), tmp_path / "c.mp4")
    assert sha256_file(tmp_path / "a.mp4") == sha256_file(tmp_path / "b.mp4")
    assert sha256_file(tmp_path / "a.mp4") != sha256_file(tmp_path / "c.mp4")
    frames = await frames_rgb(tmp_path / "a.mp4")
    # zooming in on the ramp narrows the span of brightness seen across the top rows
    first, last = frames[0], frames[-1]
    span = [region_mean(f, W - 16, 0, W, 12)[1] - region_mean(f, 0, 0, 16, 12)[1] for f in (first, last)]
    assert span[0] - span[1] > 20


@pytest.mark.asyncio
async def test_transition_frame_blends_both_scenes(tmp_path: Path) -> None:
    spec = replace(SPEC, shots=["A", "B"], transition="fade")
    a, b = plan_scenes(spec)
    assert (a.frames, a.tail_frames) == (12, 5)
    await render_animatic(spec, tmp_path / "fade.mp4")
    frames = await frames_rgb(tmp_path / "fade.mp4")
    corner = [region_mean(f, 0, 0, 24, 12) for f in frames]
    before, mid, after = corner[b.start_frame - 1], corner[b.start_frame + 2], corner[b.start_frame + 5]
    channel = max(range(3), key=lambda c: abs(after[c] - before[c]))
    gap = after[channel] - before[channel]
    assert abs(gap) > 20, "the two scenes' backgrounds should differ"
    share = (mid[channel] - before[channel]) / gap  # 0: all scene A, 1: all scene B
    assert 0.2 < share < 0.8, (before, mid, after)


@pytest.mark.asyncio
@pytest.mark.parametrize("with_reference", [False, True])
async def test_exact_frames_size_and_duration(tmp_path: Path, ramp: Path, with_reference: bool) -> None:
    spec = AnimaticSpec(prompt="One. Two. Three. Four.", seconds=2.4, width=W, height=H, fps=15, seed=3,
                        reference=ramp if with_reference else None)
    out = tmp_path / "clip.mp4"
    await render_animatic(spec, out)
    frames, duration = await frame_count_and_duration(out)
    assert frames == spec.total_frames == 36
    assert duration == pytest.approx(2.4, abs=1e-3)
    assert len(await frames_rgb(out)) == 36  # W x H RGB frames: the size is exact too


# --- through the provider ---------------------------------------------------------------------



@pytest.mark.asyncio
async def test_provider_pans_the_jobs_input_reference(tmp_path: Path, ramp: Path, run_to_end: RunToEnd) -> None:
    content = ContentStore(tmp_path / "content")
    provider = AnimaticProvider(1920 * 1080, 60, tmp_path, content=content)
    uri = content.put(ramp).uri
    spec = jobs_pb2.JobSpec(prompt="A ramp.", seconds=1, width=W, height=H, seed=2, input_reference_uri=uri,
                            metadata={"animatic.fps": "12"})
    job = ProviderJob("j/ref", spec)
    status = await run_to_end(provider, job)
    assert status.state == "succeeded", status.error
    await provider.fetch_output(job, status, tmp_path / "out.mp4")
    assert (await frame_count_and_duration(tmp_path / "out.mp4"))[0] == 12


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["not a picture", "missing"])
async def test_provider_refuses_a_bad_reference_as_invalid_input(
    tmp_path: Path, case: str, run_to_end: RunToEnd
) -> None:
    content = ContentStore(tmp_path / "content")
    provider = AnimaticProvider(1920 * 1080, 60, tmp_path, content=content)
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    uri = content.put(text).uri if case == "not a picture" else "cas://sha256/" + "0" * 64 + ".png"
    spec = jobs_pb2.JobSpec(prompt="x", seconds=1, width=W, height=H, input_reference_uri=uri)
    status = await run_to_end(provider, ProviderJob(f"j/{case}", spec))
    assert status.state == "failed" and status.error is not None and status.error.code == "invalid_input"
