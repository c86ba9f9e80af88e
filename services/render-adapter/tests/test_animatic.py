"""The animatic renderer: pure planning and layout, then real ffmpeg renders checked with ffprobe."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest

from reelforge_core.media import MediaError, probe, sha256_file
from reelforge_render.animatic import (
    MAX_DERIVED_SCENES,
    AnimaticSpec,
    RenderRejected,
    TextLayout,
    build_filtergraph,
    escape_filter_value,
    group_phrases,
    layout_text,
    plan_scenes,
    render_animatic,
    split_frames,
    split_phrases,
    text_assets,
    text_width_em,
    validate,
)

PROMPT = (
    "A sleek water purifier on a sunlit kitchen counter. A family fills glasses of sparkling water. "
    "Close-up of the filter cartridge clicking into place. Pure water for every home."
)
SPEC = AnimaticSpec(prompt=PROMPT, seconds=8, width=1280, height=720, seed=7)


# --- validate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 1281}, "width must be an even number between 64 and 3840, got 1281"),
        ({"width": 62}, "width must be an even number between 64 and 3840, got 62"),
        ({"height": 3842}, "height must be an even number between 64 and 3840, got 3842"),
        ({"seconds": 0.4}, "seconds must be between 0.5 and 60, got 0.4"),
        ({"seconds": 60.5}, "seconds must be between 0.5 and 60, got 60.5"),
        ({"seconds": math.nan}, "seconds must be between 0.5 and 60, got nan"),
        ({"fps": 0}, "fps must be between 1 and 60, got 0"),
        ({"fps": 61}, "fps must be between 1 and 60, got 61"),
        ({"prompt": "  \n\t"}, "prompt must not be empty"),
        ({"prompt": "\x00\x01"}, "prompt must not be empty"),
        ({"prompt": "x" * 4001}, "prompt must be at most 4000 characters, got 4001"),
        ({"shots": []}, "shots must list between 1 and 16 shots for 8 s at 24 fps"),
        ({"shots": ["a"] * 17}, "got 17"),
        ({"shots": ["a", " "]}, "shots must not be empty, shot 2 is"),
    ],
)
def test_validate_rejects(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RenderRejected) as caught:
        validate(replace(SPEC, **changes))  # type: ignore[arg-type]
    assert caught.value.code == "invalid_input"
    assert message in caught.value.message


def test_validate_names_every_problem() -> None:
    with pytest.raises(RenderRejected) as caught:
        validate(replace(SPEC, width=99, fps=0))
    assert "width must be" in caught.value.message and "fps must be" in caught.value.message


def test_validate_limits_shots_by_frames_at_low_fps() -> None:
    with pytest.raises(RenderRejected, match="between 1 and 2 shots"):
        validate(replace(SPEC, seconds=2, fps=1, shots=["a", "b", "c"]))


@pytest.mark.parametrize("spec", [SPEC, replace(SPEC, width=64, height=3840, seconds=0.5, fps=60)])
def test_validate_accepts(spec: AnimaticSpec) -> None:
    validate(spec)


# --- planning ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        replace(SPEC, seconds=7.3, fps=30),
        replace(SPEC, seconds=0.5),
        replace(SPEC, seconds=59.99, fps=25, shots=[f"shot {i}" for i in range(24)]),
        replace(SPEC, seconds=1.5, fps=1, shots=["a", "b"]),
    ],
)
def test_plan_durations_are_frame_accurate_and_sum_to_seconds(spec: AnimaticSpec) -> None:
    scenes = plan_scenes(spec)
    assert sum(s.frames for s in scenes) == spec.total_frames
    assert all(s.frames >= 1 for s in scenes)
    assert math.isclose(math.fsum(s.duration_s for s in scenes), spec.seconds, abs_tol=1e-9)
    for previous, scene in itertools.pairwise(scenes):
        assert scene.start_frame == previous.start_frame + previous.frames
        assert scene.start_s == pytest.approx(scene.start_frame / spec.fps)
    assert [s.index for s in scenes] == list(range(len(scenes)))


def test_plan_is_deterministic_by_seed() -> None:
    assert plan_scenes(SPEC) == plan_scenes(replace(SPEC))
    other = plan_scenes(replace(SPEC, seed=8))
    assert [(s.colors, s.motion, s.gradient_seed) for s in other] != [
        (s.colors, s.motion, s.gradient_seed) for s in plan_scenes(SPEC)
    ]
    assert [s.text for s in other] == [s.text for s in plan_scenes(SPEC)]


def test_plan_derives_scenes_from_the_prompt() -> None:
    scenes = plan_scenes(SPEC)
    assert [s.text for s in scenes] == [
        "A sleek water purifier on a sunlit kitchen counter.",
        "A family fills glasses of sparkling water.",
        "Close-up of the filter cartridge clicking into place.",
        "Pure water for every home.",
    ]
    assert len({s.colors for s in scenes}) == len(scenes)
    assert all(a.motion != b.motion for a, b in itertools.pairwise(scenes))


def test_plan_uses_the_shot_list_verbatim() -> None:
    scenes = plan_scenes(replace(SPEC, shots=["Wide: the shop at dawn", "Close:  the  \n sign"]))
    assert [s.text for s in scenes] == ["Wide: the shop at dawn", "Close: the sign"]


def test_plan_scene_count_stays_in_range() -> None:
    many = " ".join(f"Sentence number {i}." for i in range(11))
    assert len(plan_scenes(replace(SPEC, prompt=many))) == MAX_DERIVED_SCENES
    assert len(plan_scenes(replace(SPEC, prompt="Kittens"))) == 1
    assert len(plan_scenes(replace(SPEC, prompt=PROMPT, seconds=0.9))) == 1


def test_split_phrases() -> None:
    assert split_phrases("One. Two! Three?") == ["One.", "Two!", "Three?"]
    assert split_phrases("a red car, driving fast; at night") == ["a red car", "driving fast", "at night"]
    assert split_phrases("a slow pan over a quiet harbour") == ["a slow pan", "over a quiet harbour"]
    assert split_phrases("  cat \n") == ["cat"]


def test_group_phrases_keeps_order_and_balances() -> None:
    parts = ["aaaa", "b", "c", "dddd", "e", "f"]
    grouped = group_phrases(parts, 3)
    assert len(grouped) == 3
    assert " ".join(grouped) == " ".join(parts)
    assert group_phrases(["x", "y"], 4) == ["x", "y"]


def test_split_frames() -> None:
    assert split_frames(10, 3) == [4, 3, 3]
    assert split_frames(3, 3) == [1, 1, 1]


# --- layout and filtergraph -------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (720, 1280), (320, 240), (64, 64), (3840, 2160)])
def test_layout_fits_the_frame(width: int, height: int) -> None:
    layout = layout_text(PROMPT, width, height)
    assert layout.fontsize >= 10
    assert all(text_width_em(line) * layout.fontsize <= 0.84 * width for line in layout.lines)
    assert len(layout.lines) * layout.fontsize * 1.3 <= 0.55 * height or len(layout.lines) == 1


def test_layout_keeps_every_word_when_it_fits_and_truncates_when_not() -> None:
    short = "Pure water for every home."
    assert " ".join(layout_text(short, 1280, 720).lines) == short
    crammed = layout_text(PROMPT * 3, 64, 64)
    assert crammed.lines[-1].endswith("\u2026")
    broken = layout_text("Supercalifragilisticexpialidocious", 64, 64)
    assert all(len(line) < 34 for line in broken.lines)


def test_escape_filter_value() -> None:
    assert escape_filter_value("/tmp/a:b") == r"/tmp/a\\:b"
    assert escape_filter_value("it's") == r"it\\\'s"
    assert escape_filter_value("x,y[z];") == r"x\,y\[z\]\;"


def test_filtergraph_reads_text_from_files_not_from_the_graph() -> None:
    spec = replace(SPEC, prompt="It's 100% pure: [water], {filtered}; 'quoted' \\ done", seconds=2)
    scenes = plan_scenes(spec)
    layouts = [layout_text(s.text, spec.width, spec.height) for s in scenes]
    graph = build_filtergraph(spec, scenes, layouts, Path("/work"), Path("/fonts/f.ttf"))
    assert "100%" not in graph and "quoted" not in graph
    cuts = sum(1 for s in scenes if s.tail_frames)
    assert graph.endswith(f"concat=n={len(scenes) + cuts}:v=1:a=0[vout]")  # bodies and transitions
    assert graph.count("xfade=") == cuts
    assets = text_assets(scenes, layouts)
    assert all(f"textfile=/work/{name}" in graph for name in assets)
    assert assets["scene0-caption.txt"] == f"scene 1/{len(scenes)}"
    assert "100%" in " ".join(assets.values())


def test_text_assets_names_are_unique() -> None:
    scenes = plan_scenes(SPEC)
    layouts = [TextLayout(("a", "b"), 20) for _ in scenes]
    assert len(text_assets(scenes, layouts)) == 3 * len(scenes)


# --- real renders -----------------------------------------------------------------------------


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def _render_and_check(spec: AnimaticSpec, out: Path) -> None:
    await render_animatic(spec, out)
    info = await probe(out)
    assert info.video is not None
    assert (info.video.codec_name, info.video.width, info.video.height) == ("h264", spec.width, spec.height)
    assert info.video.fps == pytest.approx(spec.fps)
    assert info.duration_s == pytest.approx(spec.seconds, abs=0.1)
    assert info.audio is None and info.streams_of("audio") == ()
    assert names_in(out.parent) == [out.name]  # temp files gone


@pytest.mark.asyncio
async def test_render_small(tmp_path: Path) -> None:
    await _render_and_check(replace(SPEC, seconds=2, width=320, height=240), tmp_path / "small.mp4")


@pytest.mark.asyncio
async def test_render_720p(tmp_path: Path) -> None:
    await _render_and_check(replace(SPEC, seconds=1.5), tmp_path / "hd.mp4")


@pytest.mark.asyncio
async def test_render_hostile_text_and_path(tmp_path: Path) -> None:
    out = tmp_path / "dir:with,odd'chars[1];" / "out.mp4"
    spec = AnimaticSpec(
        prompt="It's 100% pure: [water], {filtered}; \\ %{pts} 'quoted' \u00fcber caf\u00e9",
        seconds=1,
        width=160,
        height=90,
        fps=12,
        shots=["It's 100%: [a], b; c", "%{localtime} \\n 'x'"],
    )
    await _render_and_check(spec, out)


@pytest.mark.asyncio
async def test_render_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    spec = replace(SPEC, seconds=2, width=320, height=240)
    await render_animatic(spec, tmp_path / "a.mp4")
    await render_animatic(spec, tmp_path / "b.mp4")
    await render_animatic(replace(spec, seed=99), tmp_path / "c.mp4")
    assert sha256_file(tmp_path / "a.mp4") == sha256_file(tmp_path / "b.mp4")
    assert sha256_file(tmp_path / "a.mp4") != sha256_file(tmp_path / "c.mp4")


@pytest.mark.asyncio
async def test_render_rejects_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(RenderRejected):
        await render_animatic(replace(SPEC, width=1281), tmp_path / "out" / "x.mp4")
    assert not (tmp_path / "out").exists()


@pytest.mark.asyncio
async def test_render_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(MediaError) as caught:
        await render_animatic(replace(SPEC, seconds=30, width=3840, height=2160), out, timeout_s=0.2)
    assert caught.value.code == "media_tool_timeout"
    assert names_in(tmp_path) == []


@pytest.mark.asyncio
async def test_render_missing_font(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        await render_animatic(SPEC, tmp_path / "x.mp4", font=tmp_path / "nope.ttf")
    assert caught.value.code == "media_font_missing"
