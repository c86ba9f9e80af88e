"""The finishing step: pure cue building, then real espeak-ng + ffmpeg runs checked with ffprobe."""

from __future__ import annotations

import itertools
import re
import struct
from pathlib import Path

import pytest

from reelforge_core.media import FFMPEG, MediaError, file_arg, probe, run_tool
from reelforge_postprocess.finishing import (
    Cue,
    cue_lines,
    finish_video,
    subtitle_cues,
    synthesize_speech,
    to_srt,
    to_webvtt,
)

NARRATION = "Pure water for every home. Filtered in seconds."
LONG = (
    "Meet the AquaPure 3000, the quietest purifier we have ever built; it filters, chills and "
    "sparkles your water in seconds - and the cartridge lasts a whole year. Order today!"
)


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


# --- cues (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [NARRATION, LONG, "One", "A" * 100, "word " * 60])
@pytest.mark.parametrize("max_chars", [10, 24, 42])
def test_cues_are_ordered_contiguous_within_duration_and_short(text: str, max_chars: int) -> None:
    cues = subtitle_cues(text, 7.5, max_chars)
    assert cues[0].start_s == 0.0
    assert cues[-1].end_s == pytest.approx(7.5, abs=0.001)
    assert all(c.start_s < c.end_s for c in cues)
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(cues))  # no overlap, no gap
    assert all(0 < len(c.text) <= max_chars for c in cues)
    assert "".join(c.text for c in cues).replace(" ", "") == text.replace(" ", "")  # nothing lost


def test_cues_follow_sentences_and_phrases() -> None:
    texts = [c.text for c in subtitle_cues(NARRATION, 3.0)]
    assert texts == ["Pure water for every home.", "Filtered in seconds."]
    assert cue_lines(LONG, 42) == [
        "Meet the AquaPure 3000,",
        "the quietest purifier we have ever built;",
        "it filters,",
        "chills and sparkles your water in seconds",
        "- and the cartridge lasts a whole year.",
        "Order today!",
    ]


def test_cue_time_is_proportional_to_characters() -> None:
    short, long_ = subtitle_cues("Tiny. A considerably longer second sentence.", 10.0)
    assert (short.end_s - short.start_s) / (long_.end_s - long_.start_s) == pytest.approx(
        len(short.text) / len(long_.text), rel=0.01
    )


def test_cue_edge_cases() -> None:
    assert subtitle_cues("   ", 3.0) == []
    with pytest.raises(ValueError, match="speech_seconds"):
        subtitle_cues("Hello.", 0)
    with pytest.raises(ValueError, match="max_chars"):
        subtitle_cues("Hello.", 1.0, max_chars=5)


def test_srt_and_webvtt() -> None:
    cues = [Cue(0.0, 1.5, "Pure water <for> you & me."), Cue(1.5, 3723.004, "Done --> now")]
    assert to_srt(cues) == (
        "1\n00:00:00,000 --> 00:00:01,500\nPure water <for> you & me.\n\n"
        "2\n00:00:01,500 --> 01:02:03,004\nDone -> now\n"
    )
    assert to_webvtt(cues) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\nPure water &lt;for&gt; you &amp; me.\n\n"
        "00:00:01.500 --> 01:02:03.004\nDone --&gt; now\n"
    )
    assert to_srt([]) == "" and to_webvtt([]) == "WEBVTT\n"


# --- real tools -------------------------------------------------------------------------------


QUIET_LAVFI = ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"]


async def make_video(path: Path, seconds: float = 3.0, audio: bool = False) -> Path:
    args = [FFMPEG, *QUIET_LAVFI, f"testsrc2=s=320x240:r=24:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=f=220:d={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", file_arg(path)]
    await run_tool(args, 60)
    return path


async def video_md5(path: Path) -> str:
    """MD5 of the video packets: equal means the stream was copied, not re-encoded."""
    args = [FFMPEG, "-v", "error", "-i", file_arg(path), "-map", "0:v:0", "-c", "copy", "-f", "md5", "-"]
    return (await run_tool(args, 30)).strip()


def top_level_boxes(path: Path) -> list[str]:
    boxes, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        offset += size or len(data)
    return boxes


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_faststart(path: Path) -> None:
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.asyncio
async def test_synthesize_speech(tmp_path: Path) -> None:
    seconds = await synthesize_speech("-v this starts with a dash.", tmp_path / "s.wav")
    assert 0.5 < seconds < 5
    info = await probe(tmp_path / "s.wav")
    assert info.audio is not None and info.audio.codec_name == "pcm_s16le"
    assert names_in(tmp_path) == ["s.wav"]


@pytest.mark.asyncio
async def test_synthesize_speech_rejects_bad_input(tmp_path: Path) -> None:
    for kwargs in ({"voice": "--help"}, {"words_per_minute": 20}, {"text": "  "}):
        with pytest.raises(MediaError) as caught:
            await synthesize_speech(**{"text": "Hi.", "out_wav": tmp_path / "s.wav", **kwargs})  # type: ignore[arg-type]
        assert caught.value.code == "invalid_input"
    with pytest.raises(MediaError) as caught:
        await synthesize_speech("Hi.", tmp_path / "s.wav", voice="zz")
    assert caught.value.code == "media_tool_failed"


@pytest.mark.asyncio
async def test_finish_with_narration(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4")
    out = tmp_path / "out" / "final.mp4"
    result = await finish_video(source, out, NARRATION)

    assert result.path == out and out.is_file()
    assert names_in(out.parent) == ["final.mp4"]  # temp files gone
    info = await probe(out)
    assert info.video is not None and info.audio is not None
    assert (info.video.codec_name, info.video.width, info.video.height) == ("h264", 320, 240)
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    assert result.duration_s == pytest.approx(3.0, abs=0.1)
    assert [s.codec_name for s in info.streams_of("audio")] == ["aac"]
    assert info.audio.duration_s == pytest.approx(info.video.duration_s or 0, abs=0.05)
    assert info.audio.language == "eng"
    assert [(s.codec_name, s.language) for s in info.subtitles] == [("mov_text", "eng")]
    assert await video_md5(out) == await video_md5(source)
    assert_faststart(out)

    assert 0 < result.speech_seconds <= 3.0  # 3.6 s at 160 wpm, so it was re-spoken faster to fit
    assert result.cues[-1].end_s == pytest.approx(result.speech_seconds, abs=0.001)
    srt = await run_tool([FFMPEG, "-v", "error", "-i", file_arg(out), "-map", "0:s:0", "-f", "srt", "-"], 30)
    spoken = [line for line in srt.splitlines() if line and not line.isdigit() and "-->" not in line]
    assert words(" ".join(spoken)) == words(NARRATION)


@pytest.mark.asyncio
async def test_finish_mixes_narration_over_existing_audio(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=4, audio=True)
    result = await finish_video(source, tmp_path / "final.mp4", "Filtered in seconds.", language="deu")
    info = await probe(result.path)
    assert [s.codec_name for s in info.streams_of("audio")] == ["aac"]
    assert info.audio is not None and info.audio.language == "deu"
    assert info.audio.duration_s == pytest.approx(4.0, abs=0.05)
    assert len(info.subtitles) == 1


@pytest.mark.asyncio
async def test_finish_without_narration_just_remuxes(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4")
    result = await finish_video(source, tmp_path / "final.mp4", None)
    info = await probe(result.path)
    assert (result.speech_seconds, result.cues) == (0.0, ())
    assert info.audio is None and info.subtitles == ()
    assert await video_md5(result.path) == await video_md5(source)
    assert_faststart(result.path)


@pytest.mark.asyncio
async def test_finish_rejects_narration_that_cannot_fit(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=0.5)
    out = tmp_path / "final.mp4"
    with pytest.raises(MediaError) as caught:
        await finish_video(source, out, LONG)
    assert caught.value.code == "narration_too_long"
    assert names_in(tmp_path) == ["in.mp4"]


@pytest.mark.asyncio
async def test_finish_rejects_bad_language_and_unreadable_input(tmp_path: Path) -> None:
    source = await make_video(tmp_path / "in.mp4", seconds=0.5)
    with pytest.raises(MediaError) as caught:
        await finish_video(source, tmp_path / "final.mp4", NARRATION, language="en; rm")
    assert caught.value.code == "invalid_input"
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError) as caught:
        await finish_video(tmp_path / "junk.mp4", tmp_path / "final.mp4", NARRATION)
    assert caught.value.code == "media_unreadable"
