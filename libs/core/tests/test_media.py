"""reelforge_core.media against the real ffmpeg / ffprobe binaries."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from reelforge_core.media import (
    FFMPEG,
    MediaError,
    file_arg,
    parse_probe,
    parse_rate,
    probe,
    run_tool,
    sha256_file,
)

QUIET_LAVFI = ["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"]


async def make_clip(path: Path, seconds: float = 2.0, audio: bool = True) -> Path:
    args = [FFMPEG, *QUIET_LAVFI, f"testsrc2=s=320x240:r=25:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=f=440:d={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", file_arg(path)]
    await run_tool(args, 60)
    return path


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"


def _read_pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


async def _pid_from(path: Path) -> int:
    for _ in range(200):
        if pid := _read_pid(path):
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError("the child never started")


@pytest.mark.asyncio
async def test_run_tool_returns_stdout_or_stderr() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    assert (await run_tool([sys.executable, "-c", code], 10)).strip() == "out"
    assert (await run_tool([sys.executable, "-c", code], 10, output="stderr")).strip() == "err"


@pytest.mark.asyncio
async def test_run_tool_failure_carries_the_tail_of_stderr() -> None:
    code = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(50)]; sys.exit(3)"
    with pytest.raises(MediaError) as caught:
        await run_tool([sys.executable, "-c", code], 10)
    assert caught.value.code == "media_tool_failed"
    assert "exited with code 3" in caught.value.message
    assert "line 49" in caught.value.message
    assert "line 29" not in caught.value.message  # only the last 20 lines


@pytest.mark.asyncio
async def test_run_tool_missing_binary() -> None:
    with pytest.raises(MediaError) as caught:
        await run_tool(["reelforge-no-such-tool"], 5)
    assert caught.value.code == "media_tool_missing"


@pytest.mark.asyncio
async def test_run_tool_timeout_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        await run_tool([sys.executable, "-c", SLEEPER, str(pid_file)], 0.5)
    assert caught.value.code == "media_tool_timeout"
    assert time.monotonic() - started < 10
    pid = _read_pid(pid_file)
    assert pid is not None and _gone(pid)


@pytest.mark.asyncio
async def test_run_tool_cancellation_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(run_tool([sys.executable, "-c", SLEEPER, str(pid_file)], 60))
    pid = await _pid_from(pid_file)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(pid)


@pytest.mark.asyncio
async def test_probe_reads_streams(tmp_path: Path) -> None:
    clip = await make_clip(tmp_path / "clip.mp4")
    result = await probe(clip)
    assert result.duration_s == pytest.approx(2.0, abs=0.1)
    assert result.video is not None and result.audio is not None
    assert (result.video.codec_name, result.video.width, result.video.height) == ("h264", 320, 240)
    assert result.video.fps == pytest.approx(25.0)
    assert result.audio.codec_name == "aac" and result.audio.sample_rate
    assert result.subtitles == ()
    assert len(result.streams_of("audio")) == 1


@pytest.mark.asyncio
async def test_probe_path_with_a_colon(tmp_path: Path) -> None:
    clip = await make_clip(tmp_path / "take:1.mp4", seconds=0.5, audio=False)
    assert (await probe(clip)).audio is None


@pytest.mark.asyncio
async def test_probe_corrupt_and_missing_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    for path in (corrupt, tmp_path / "missing.mp4"):
        with pytest.raises(MediaError) as caught:
            await probe(path)
        assert caught.value.code == "media_unreadable"
        assert path.name in caught.value.message


def test_parse_probe_handles_tags_cover_art_and_missing_duration() -> None:
    document = {
        "format": {"format_name": "mov,mp4", "size": "1234"},
        "streams": [
            {"index": 0, "codec_type": "video", "codec_name": "mjpeg", "disposition": {"attached_pic": 1}},
            {"index": 1, "codec_type": "video", "codec_name": "h264", "width": 640, "height": 360,
             "avg_frame_rate": "30000/1001", "duration": "4.2"},
            {"index": 2, "codec_type": "subtitle", "codec_name": "mov_text", "tags": {"language": "eng"}},
        ],
    }  # fmt: skip
    result = parse_probe(document)
    assert result.duration_s == pytest.approx(4.2)
    assert result.size_bytes == 1234
    assert result.video is not None and result.video.index == 1
    assert result.video.fps == pytest.approx(29.97, abs=0.01)
    assert [s.language for s in result.subtitles] == ["eng"]
    assert result.audio is None


@pytest.mark.parametrize(
    ("rate", "expected"), [("25/1", 25.0), ("24", 24.0), ("0/0", None), ("x/y", None), (None, None)]
)
def test_parse_rate(rate: str | None, expected: float | None) -> None:
    assert parse_rate(rate) == expected


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abc" * 1_000_000)
    assert sha256_file(path, chunk_size=4096) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
