"""Chinese subtitles burn in with real glyphs, not tofu: the font is chosen by language, the text
leaves ink, and two different sentences draw different pixels (missing glyphs draw nothing or all
the same box, as the control run with fontconfig limited to DejaVu shows)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from reelforge.postprocess.v1 import postprocess_pb2 as pb
from reelforge_core.finishing import CJK_FONT, LATIN_FONT, SubtitleStyle, build_plan
from reelforge_core.media import FFMPEG, file_arg
from reelforge_postprocess.subtitles import Cue, to_ass
from services.postprocess.tests.media_helpers import bright_pixels, gray_frame, make_video
from services.postprocess.tests.test_pipeline import GREY, run

TEXT_BOX = (0.05, 0.6, 0.95, 0.95)


def chinese_burn_in(sentence: str) -> pb.PostprocessOptions:
    options = pb.PostprocessOptions()
    options.narration.segments.add(start_seconds=0.1, text="Pure water.", translations={"zho": sentence})
    options.subtitles.languages.extend(["zho"])
    options.subtitles.burn_in.language = "zho"
    options.subtitles.burn_in.style.size_fraction = 0.1
    return options


def differing_pixels(a: tuple[int, int, bytes], b: tuple[int, int, bytes], box: tuple[float, ...]) -> int:
    width, height, _ = a
    x0, y0, x1, y1 = round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)
    return sum(1 for y in range(y0, y1) for x in range(x0, x1) if abs(a[2][y * width + x] - b[2][y * width + x]) > 60)


def test_fonts_are_chosen_by_language_and_the_cjk_font_covers_chinese() -> None:
    plan = build_plan(chinese_burn_in("你好世界"))
    assert plan.subtitles is not None and plan.subtitles.burn_in is not None
    assert plan.subtitles.burn_in.style.font == CJK_FONT
    english = pb.PostprocessOptions()
    english.narration.segments.add(start_seconds=0.1, text="Pure water.")
    english.subtitles.burn_in.SetInParent()
    burn = build_plan(english).subtitles
    assert burn is not None and burn.burn_in is not None and burn.burn_in.style.font == LATIN_FONT
    chosen = pb.PostprocessOptions()
    chosen.CopyFrom(chinese_burn_in("你好"))
    chosen.subtitles.burn_in.style.font = "Noto Sans"
    chosen_plan = build_plan(chosen).subtitles
    assert chosen_plan is not None and chosen_plan.burn_in is not None
    assert chosen_plan.burn_in.style.font == "Noto Sans"  # the partner's choice stands
    # fontconfig knows the family, and it covers the characters (fc-list matches on the charset).
    covered = subprocess.run(["fc-list", f"{CJK_FONT}:charset=4f60 597d 4e16 754c", "family"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert CJK_FONT in covered


@pytest.mark.asyncio
async def test_chinese_burn_in_draws_real_glyphs(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=2.0, size="640x360", source=GREY)
    first = await run(source, chinese_burn_in("你好世界"), tmp_path / "a")
    second = await run(source, chinese_burn_in("山水干净"), tmp_path / "b")
    cue = first.cues["zho"][0]
    at = (cue.start_s + cue.end_s) / 2
    frame_a, frame_b = await gray_frame(first.main.path, at), await gray_frame(second.main.path, at)
    assert bright_pixels(frame_a, TEXT_BOX) > 500 and bright_pixels(frame_b, TEXT_BOX) > 500
    assert differing_pixels(frame_a, frame_b, TEXT_BOX) > 300  # different characters, different shapes


@pytest.mark.asyncio
async def test_without_a_cjk_font_the_same_check_sees_tofu(tmp_path: Path) -> None:
    """The control: with fontconfig limited to DejaVu (no CJK), the checks above would fail."""
    source = await make_video(tmp_path / "in.mp4", seconds=1.0, size="640x360", source=GREY)
    config = tmp_path / "fonts.conf"
    config.write_text('<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
                      "<dir>/usr/share/fonts/truetype/dejavu</dir>"
                      f"<cachedir>{tmp_path / 'fc-cache'}</cachedir></fontconfig>")  # fmt: skip
    frames = []
    for name, sentence in (("a", "你好世界"), ("b", "山水干净")):
        script = tmp_path / f"{name}.ass"
        script.write_text(to_ass([Cue(0.0, 1.0, sentence)], 640, 360, SubtitleStyle(font=CJK_FONT,
                                                                                      size_fraction=0.1)))  # fmt: skip
        out = tmp_path / f"{name}.mp4"
        args = [FFMPEG, "-nostdin", "-v", "error", "-y", "-i", file_arg(source), "-vf", f"ass=filename={script}",
                "-c:v", "libx264", "-preset", "ultrafast", file_arg(out)]  # fmt: skip
        env = {**os.environ, "FONTCONFIG_FILE": str(config)}
        await asyncio.to_thread(subprocess.run, args, env=env, check=True, capture_output=True)
        frames.append(await gray_frame(out, 0.5))
    # libass draws missing glyphs as nothing (other renderers as identical boxes): either way the
    # two sentences come out alike, and without ink; the real test above demands both.
    assert bright_pixels(frames[0], TEXT_BOX) < 100
    assert differing_pixels(frames[0], frames[1], TEXT_BOX) < 50
