"""Test media made with ffmpeg's sources, and measurements taken independently of the code under test."""

from __future__ import annotations

import array
import math
import re
import sys
from pathlib import Path

from reelforge_core.media import FFMPEG, file_arg, run_tool

QUIET = [FFMPEG, "-nostdin", "-v", "error", "-y"]


async def make_video(
    path: Path, seconds: float = 3.0, size: str = "320x240", source: str = "testsrc2", audio: bool = False
) -> Path:
    """`source` is a lavfi video source name or `color=c=0x...`; the frame rate is 24."""
    spec = f"{source}=s={size}:r=24:d={seconds}" if "=" not in source else f"{source}:s={size}:r=24:d={seconds}"
    args = [*QUIET, "-f", "lavfi", "-i", spec]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=f=220:d={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", file_arg(path)]
    await run_tool(args, 60)
    return path


async def make_music(path: Path, seconds: float, frequency: float) -> Path:
    """A steady tone with a little noise: a stand-in music bed whose level is easy to follow."""
    tone = f"sine=f={frequency}:d={seconds}:sample_rate=48000,volume=0.5[t]"
    graph = f"{tone};anoisesrc=d={seconds}:a=0.01[n];[t][n]amix=inputs=2"
    await run_tool([*QUIET, "-filter_complex", graph, "-c:a", "aac", "-b:a", "160k", file_arg(path)], 60)
    return path


async def video_md5(path: Path) -> str:
    """MD5 of the video packets: equal means the stream was copied, not re-encoded."""
    args = [FFMPEG, "-v", "error", "-i", file_arg(path), "-map", "0:v:0", "-c", "copy", "-f", "md5", "-"]
    return (await run_tool(args, 30)).strip()


async def gray_frame(path: Path, at_s: float) -> tuple[int, int, bytes]:
    """(width, height, luma bytes) of the frame at `at_s`."""
    info = await run_tool(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=width,height", "-of", "csv=p=0", file_arg(path)], 30)  # fmt: skip
    width, height = (int(x) for x in info.strip().split(",")[:2])
    seek = ["-ss", f"{at_s:.3f}"] if at_s else []  # (seeking in a still image yields no frame)
    args = [*QUIET, *seek, "-i", file_arg(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    proc_out = await _raw(args)
    return width, height, proc_out


async def _raw(args: list[str]) -> bytes:
    import asyncio

    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out


def bright_pixels(frame: tuple[int, int, bytes], box: tuple[float, float, float, float], level: int = 200) -> int:
    """Pixels brighter than `level` inside box = (x0, y0, x1, y1) given as shares of the frame."""
    width, height, luma = frame
    x0, y0, x1, y1 = round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)
    return sum(1 for y in range(y0, y1) for x in range(x0, x1) if luma[y * width + x] > level)


def mean_luma(frame: tuple[int, int, bytes], box: tuple[float, float, float, float]) -> float:
    width, height, luma = frame
    x0, y0, x1, y1 = round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)
    values = [luma[y * width + x] for y in range(y0, y1) for x in range(x0, x1)]
    return sum(values) / len(values)


async def sound_intervals(path: Path, noise_db: float = -40, min_silence_s: float = 0.4) -> list[tuple[float, float]]:
    """Where the first audio track is not silent, by ffmpeg's silencedetect."""
    args = [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-v", "info", "-i", file_arg(path), "-map", "0:a:0",
            "-af", f"silencedetect=n={noise_db}dB:d={min_silence_s}", "-f", "null", "-"]  # fmt: skip
    stderr = await run_tool(args, 60, output="stderr")
    duration = float(re.findall(r"Duration: (\d+):(\d+):([\d.]+)", stderr)[0][2])
    events = re.findall(r"silence_(start|end): (-?[\d.]+)", stderr)
    sound, cursor = [], 0.0
    for kind, at in events:
        if kind == "start":
            if float(at) > cursor:
                sound.append((cursor, float(at)))
        else:
            cursor = float(at)
    if not events or events[-1][0] == "end":
        sound.append((cursor, duration))
    return [(round(a, 3), round(b, 3)) for a, b in sound if b - a > 0.05]


async def band_levels_db(path: Path, highpass_hz: float, window_s: float = 0.25) -> list[float]:
    """RMS level (dBFS) per window of the first audio track above `highpass_hz` (steep)."""
    steep = ",".join([f"highpass=f={highpass_hz}"] * 4)
    args = [*QUIET, "-i", file_arg(path), "-map", "0:a:0", "-af", f"{steep},aresample=48000", "-ac", "1",
            "-f", "s16le", "-acodec", "pcm_s16le", "-"]  # fmt: skip
    samples = array.array("h", await _raw(args))
    if sys.byteorder == "big":
        samples.byteswap()
    size = round(48000 * window_s)
    levels = []
    for start in range(0, len(samples) - size + 1, size):
        chunk = samples[start : start + size]
        rms = math.sqrt(sum(s * s for s in chunk) / size) / 32768
        levels.append(20 * math.log10(max(rms, 1e-9)))
    return levels


async def subtitle_track_cues(path: Path, index: int) -> list[tuple[float, float, str]]:
    srt = await run_tool([FFMPEG, "-v", "error", "-i", file_arg(path), "-map", f"0:s:{index}", "-f", "srt", "-"], 30)
    return parse_srt(srt)


def _seconds(stamp: str) -> float:
    h, m, rest = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        start, end = (x.strip() for x in lines[timing].split("-->"))
        cues.append((_seconds(start), _seconds(end), " ".join(lines[timing + 1 :])))
    return cues
