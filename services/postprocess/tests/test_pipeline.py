"""Every pipeline step with real espeak-ng and ffmpeg, each output checked independently (ffprobe,
silencedetect, ebur128, pixels of decoded frames)."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from reelforge.postprocess.v1 import postprocess_pb2 as pb
from reelforge_core.finishing import LoudnessPlan, QcPlan, build_plan
from reelforge_core.media import FFMPEG, file_arg, probe, run_tool
from reelforge_postprocess import audio, loudness, qc, remux
from reelforge_postprocess.pipeline import PipelineResult, run_pipeline
from services.postprocess.tests.media_helpers import (
    band_levels_db,
    bright_pixels,
    gray_frame,
    make_music,
    make_video,
    mean_luma,
    parse_srt,
    sound_intervals,
    subtitle_track_cues,
    video_md5,
)

CUE_TOLERANCE_S = 0.1
RU_MOUNTAINS = "Вода чистая, как в горах."  # noqa: RUF001 (Cyrillic on purpose)
RU_HELLO = "Привет, мир."
ZH_HELLO = "你好\uff0c世界。"
GREY = "color=c=0x404040"


def assert_faststart(path: Path) -> None:
    boxes, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        offset += size or len(data)
    assert boxes.index("moov") < boxes.index("mdat")


async def run(source: Path, options: pb.PostprocessOptions, work: Path, **kwargs: object) -> PipelineResult:
    work.mkdir(exist_ok=True)  # noqa: ASYNC240 (test setup)
    free_tier = bool(kwargs.pop("free_tier", False))
    plan = build_plan(options, "", "en-us", free_tier=free_tier)
    return await run_pipeline(source, plan, work, x264_preset="ultrafast", timeout_s=120, **kwargs)  # type: ignore[arg-type]


def three_language_options() -> pb.PostprocessOptions:
    options = pb.PostprocessOptions()
    options.narration.voice = "en-us"
    options.narration.segments.add(
        start_seconds=0.4, text="Meet AquaPure. Clean water from your tap.",
        translations={"rus": "Встречайте АкваПьюр. Чистая вода из-под крана.", "zho": "认识AquaPure。自来水也干净。"},
    )  # fmt: skip
    options.narration.segments.add(
        start_seconds=4.0, text=RU_MOUNTAINS, voice="ru",
        translations={"eng": "Water as clean as the mountains.", "zho": "水像山里一样干净。"},
    )  # fmt: skip
    options.narration.segments.add(
        start_seconds=6.6,
        text=ZH_HELLO,
        voice="cmn",
        translations={"eng": "Hello, world.", "rus": RU_HELLO},
    )
    options.subtitles.languages.extend(["eng", "rus", "zho"])
    options.subtitles.srt = options.subtitles.webvtt = True
    return options


@pytest.mark.asyncio
async def test_three_voices_with_subtitle_cues_on_the_spoken_segments(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=9.0, size="640x360")
    result = await run(source, three_language_options(), tmp_path / "work")

    out = result.main.path
    info = await probe(out)
    assert info.video is not None and info.audio is not None
    assert (info.audio.codec_name, info.audio.language, info.audio.duration_s) == (
        "aac",
        "eng",
        pytest.approx(9.0, abs=0.05),
    )
    assert [(s.codec_name, s.language) for s in info.subtitles] == [("mov_text", x) for x in ("eng", "rus", "zho")]
    assert result.main.stream_copied and await video_md5(out) == await video_md5(source)
    assert_faststart(out)
    assert [s.segment.voice for s in result.spoken] == ["en-us", "ru", "cmn"]

    # Where speech really is in the finished file, by silencedetect: one stretch per segment.
    heard = await sound_intervals(out)
    for spoken, next_start in zip(result.spoken, [4.0, 6.6, 9.0], strict=True):
        mine = [(a, b) for a, b in heard if spoken.start_s - 0.3 <= a < next_start]
        onset, offset = min(a for a, _ in mine), max(b for _, b in mine)
        for k, language in enumerate(("eng", "rus", "zho")):
            track = await subtitle_track_cues(out, k)
            cues = [c for c in track if spoken.start_s - 0.01 <= c[0] < next_start]
            assert abs(cues[0][0] - onset) <= CUE_TOLERANCE_S, (language, cues, onset)
            assert abs(cues[-1][1] - offset) <= CUE_TOLERANCE_S, (language, cues, offset)

    files = {f.language: f for f in result.subtitles}
    assert files["rus"].srt is not None and files["zho"].vtt is not None
    rus = parse_srt(files["rus"].srt.read_text(encoding="utf-8"))
    assert [c[2] for c in rus][-2:] == [RU_MOUNTAINS, RU_HELLO]
    assert rus == [(round(a, 3), round(b, 3), t) for a, b, t in await subtitle_track_cues(out, 1)]
    vtt = files["zho"].vtt.read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n") and "水像山里一样干净。" in vtt and "\u4f60\u597d\uff0c\u4e16\u754c\u3002" in vtt
    assert result.main.qc.passed, result.main.qc.failures


@pytest.mark.asyncio
async def test_music_is_ducked_under_the_voice_and_loudness_lands_on_target(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=8.0, size="320x180")
    # espeak-ng speaks at 22.05 kHz, so nothing of the voice is above 11 kHz: the 12.5 kHz tone is the music.
    music = await make_music(tmp_path / "music.m4a", seconds=3.0, frequency=12_500)
    options = pb.PostprocessOptions()
    options.narration.segments.add(start_seconds=3.0, text="Clean water, straight from your tap, every day.")
    options.music.uri = "cas://sha256/unused"
    options.loudness.enabled = True
    result = await run(source, options, tmp_path / "work", music_path=music)

    out = result.main.path
    spoken = result.spoken[0]
    levels = await band_levels_db(out, highpass_hz=11_500)
    window = 0.25
    before = [lv for i, lv in enumerate(levels) if i * window >= 0.5 and (i + 1) * window <= 2.8]
    during = [
        lv
        for i, lv in enumerate(levels)
        if spoken.start_s + 0.4 <= i * window and (i + 1) * window <= spoken.end_s - 0.2
    ]
    after = [lv for i, lv in enumerate(levels) if spoken.end_s + 1.0 <= i * window and (i + 1) * window <= 7.8]
    assert before and during and after
    # The music loops under the whole video, dips by at least 6 dB while the voice speaks, then recovers.
    assert max(during) < min(before) - 6, (before, during)
    assert min(after) > max(during) + 6, (after, during)

    measured = await qc.measure(out, QcPlan(), 60)  # an analysis run of its own
    assert measured.integrated_lufs == pytest.approx(-14.0, abs=1.0)
    assert measured.true_peak_dbtp is not None and measured.true_peak_dbtp <= -1.0 + 0.5
    assert result.main.qc.passed, result.main.qc.failures
    assert {"narration", "loudness_measure", "loudness_apply", "mux", "qc_pictures", "qc_sound"} <= set(result.timings)


@pytest.mark.asyncio
async def test_loudness_target_is_configurable(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=5.0, size="320x180", audio=True)
    options = pb.PostprocessOptions()
    options.loudness.enabled = True
    options.loudness.integrated_lufs = -23.0
    options.loudness.true_peak_dbtp = -2.0
    result = await run(source, options, tmp_path / "work")
    measured = result.main.qc.measures
    assert measured.integrated_lufs == pytest.approx(-23.0, abs=1.0)
    assert measured.true_peak_dbtp is not None and measured.true_peak_dbtp <= -1.5
    assert result.main.qc.passed


@pytest.mark.asyncio
async def test_renditions_pad_crop_and_copy_when_nothing_changes(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=3.0, size="640x360", source="testsrc2")
    options = pb.PostprocessOptions()
    options.narration.segments.add(start_seconds=0.2, text="Pure water.")
    options.renditions.add(name="16x9", width=640, height=360)
    options.renditions.add(name="9x16", width=360, height=640, fit=pb.Rendition.FIT_PAD)
    options.renditions.add(name="1x1", width=360, height=360, fit=pb.Rendition.FIT_CROP)
    result = await run(source, options, tmp_path / "work")

    by_name = {r.name: r for r in result.renditions}
    assert by_name["16x9"].stream_copied and by_name["16x9"].path == result.main.path
    assert await video_md5(by_name["16x9"].path) == await video_md5(source)
    for name, size in (("9x16", (360, 640)), ("1x1", (360, 360))):
        rendition = by_name[name]
        assert not rendition.stream_copied
        info = await probe(rendition.path)
        assert info.video is not None and info.audio is not None
        assert (info.video.codec_name, info.video.width, info.video.height) == ("h264", *size)
        assert info.video.fps == pytest.approx(24)
        assert (info.audio.codec_name, [s.codec_name for s in info.subtitles]) == ("aac", ["mov_text"])
        assert info.duration_s == pytest.approx(3.0, abs=0.1)
        assert_faststart(rendition.path)
        assert rendition.qc.passed, rendition.qc.failures
    padded = await gray_frame(by_name["9x16"].path, 1.0)
    assert mean_luma(padded, (0, 0, 1, 0.2)) < 20  # letterbox bars above and below the 16:9 picture
    assert mean_luma(padded, (0, 0.8, 1, 1)) < 20
    assert mean_luma(padded, (0, 0.4, 1, 0.6)) > 60
    cropped = await gray_frame(by_name["1x1"].path, 1.0)
    assert mean_luma(cropped, (0, 0, 1, 0.1)) > 40 and mean_luma(cropped, (0, 0.9, 1, 1)) > 40  # no bars


@pytest.mark.asyncio
async def test_burn_in_draws_the_cue_inside_the_safe_area(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=3.0, size="640x360", source=GREY)
    options = pb.PostprocessOptions()
    options.narration.segments.add(start_seconds=0.2, text="Pure water for every home.")
    options.subtitles.burn_in.style.size_fraction = 0.08
    options.renditions.add(name="9x16", width=360, height=640)
    result = await run(source, options, tmp_path / "work")
    cue = result.cues["eng"][0]
    middle = (cue.start_s + cue.end_s) / 2

    main = await gray_frame(result.main.path, middle)
    assert bright_pixels(main, (0.1, 0.7, 0.9, 0.92)) > 200  # white text above the 8% bottom margin
    assert bright_pixels(main, (0, 0.93, 1, 1)) == 0
    assert bright_pixels(await gray_frame(result.main.path, 2.9), (0, 0, 1, 1)) == 0  # after the cue: no text
    vertical = await gray_frame(result.renditions[0].path, middle)
    assert bright_pixels(vertical, (0, 0.55, 1, 0.8)) > 100  # 9:16: lifted clear of the bottom 20%
    assert bright_pixels(vertical, (0, 0.8, 1, 1)) == 0
    assert not result.main.stream_copied
    info = await probe(result.main.path)
    assert [s.codec_name for s in info.subtitles] == ["mov_text"]  # the soft track stays as well


@pytest.mark.asyncio
async def test_watermark_only_on_free_tier_output(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=2.0, size="640x360", source=GREY)
    corner = (0.45, 0, 1, 0.15)
    paid = await run(source, pb.PostprocessOptions(), tmp_path / "paid")
    free = await run(source, pb.PostprocessOptions(), tmp_path / "free", free_tier=True)

    assert paid.main.stream_copied and not free.main.stream_copied
    # White at 60% opacity over grey (luma 64) comes out near 170.
    assert bright_pixels(await gray_frame(paid.main.path, 1.0), corner, level=140) == 0
    assert bright_pixels(await gray_frame(free.main.path, 1.0), corner, level=140) > 100
    assert bright_pixels(await gray_frame(free.main.path, 1.0), (0, 0.3, 1, 1), level=140) == 0  # only there
    assert free.main.qc.passed


@pytest.mark.asyncio
async def test_thumbnail_and_sprite_sheet(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=5.0, size="640x360")
    options = pb.PostprocessOptions()
    options.thumbnails.thumbnail = options.thumbnails.sprite = True
    options.thumbnails.sprite_interval_seconds = 1.0
    options.thumbnails.sprite_tile_width = 128
    result = await run(source, options, tmp_path / "work")
    thumbs = result.thumbnails
    assert thumbs.thumbnail is not None and thumbs.sprite is not None and thumbs.layout is not None
    poster = await probe(thumbs.thumbnail)
    assert poster.video is not None and (poster.video.codec_name, poster.video.width, poster.video.height) == (
        "mjpeg", 640, 360)  # fmt: skip
    sprite = await probe(thumbs.sprite)
    assert sprite.video is not None and (sprite.video.width, sprite.video.height) == (5 * 128, 72)
    assert len(thumbs.layout.tiles) == 5
    frame = await gray_frame(thumbs.sprite, 0)
    assert all(mean_luma(frame, (i / 5, 0, (i + 1) / 5, 1)) > 30 for i in range(5))  # every tile has a picture


@pytest.mark.asyncio
async def test_qc_fails_a_black_render_and_asks_for_a_new_one(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=2.0, size="320x180", source="color=c=black")
    result = await run(source, pb.PostprocessOptions(), tmp_path / "work")
    assert not result.qc_passed and result.rerender
    failure = result.main.qc.failures[0]
    assert failure.name == "black" and failure.measured > 0.95  # (the last frame's own duration is not counted)
    [(start, end)] = result.main.qc.measures.black
    assert start == 0.0 and end == pytest.approx(2.0, abs=0.05)


@pytest.mark.asyncio
async def test_qc_measures_frozen_picture_and_silence_with_configured_thresholds(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=3.0, size="320x180", source=GREY, audio=False)
    options = pb.PostprocessOptions()
    options.narration.segments.add(start_seconds=0.1, text="Hi.")
    default = await run(source, options, tmp_path / "default")
    measures = default.main.qc.measures
    assert measures.frozen and measures.frozen[0][0] <= 0.1 and measures.frozen[-1][1] == pytest.approx(3.0, abs=0.1)
    assert measures.silence and sum(b - a for a, b in measures.silence) > 1.5
    assert default.main.qc.passed  # frozen and silent stretches are reported, not enforced, by default
    options.qc.max_frozen_fraction = 0.5
    options.qc.max_silence_fraction = 0.3
    strict = await run(source, options, tmp_path / "strict")
    assert {c.name for c in strict.main.qc.failures} == {"frozen", "silence"}
    assert strict.rerender  # a frozen picture may render better next time


@pytest.mark.asyncio
async def test_a_peaky_mix_is_limited_and_its_gain_fitted_to_the_target(tmp_path: Path) -> None:
    """Quiet tone with loud clicks: the gain to -14 LUFS would peak far over the ceiling, the limiter
    takes several LU away, and the fitted gain gives them back (checked by ffmpeg's own ebur128)."""
    mix = tmp_path / "mix.wav"
    clicks = "0.05*sin(2*PI*440*t)+0.9*lt(mod(t\\,0.25)\\,0.005)*sin(2*PI*2000*t)"
    args = [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-y", "-f", "lavfi", "-i",
            f"aevalsrc=exprs={clicks}:s=48000:d=6", "-ac", "2", "-af", audio.MEASURE_CHAIN, "-c:a", "pcm_f32le",
            file_arg(mix)]  # fmt: skip
    measured = audio.parse_ebur128(await run_tool(args, 60, output="stderr"))
    plan = LoudnessPlan()
    plain = loudness.chain(plan, measured)
    assert loudness.limited(plain)
    assert loudness.integrated_lufs(loudness.load(mix), plain) < plan.integrated_lufs - 1.5  # the test can fail

    out = tmp_path / "sound.m4a"
    await loudness.normalise_to_aac(plan, measured, mix, out)
    found = await qc.measure_sound(out, 6.0, QcPlan(), 60)
    assert found.integrated_lufs == pytest.approx(-14.0, abs=0.5)
    assert found.true_peak_dbtp is not None and found.true_peak_dbtp <= plan.true_peak_dbtp + 0.5
    info = await asyncio.to_thread(remux.probe, out)
    assert info.audio is not None and info.audio.codec_name == "aac"
    assert info.audio.duration_s == pytest.approx(6.0, abs=0.05)
