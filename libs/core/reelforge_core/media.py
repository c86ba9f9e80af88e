"""Shared FFmpeg/ffprobe/espeak-ng plumbing: run a tool safely, probe a media file, hash a file.

Every tool runs through `run_tool`: argument lists only (never a shell), a hard timeout, and the
process is killed if the caller times out or is cancelled. Failures surface as `MediaError` with a
stable `code` that services put on job status events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reelforge_core.content import StoreFull

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
ESPEAK = "espeak-ng"
STDERR_TAIL_LINES = 20


class MediaError(Exception):
    """A media tool or media file failed; `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def file_arg(path: Path) -> str:
    """A path as an FFmpeg input/output argument; `file:` stops a colon being read as a protocol."""
    return f"file:{path}"


def stderr_tail(stderr: bytes, lines: int = STDERR_TAIL_LINES) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return "\n".join(text.splitlines()[-lines:])


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def run_tool(
    args: list[str],
    timeout_s: float,
    *,
    output: Literal["stdout", "stderr"] = "stdout",
) -> str:
    """Run `args` (no shell) and return its stdout, or its stderr with `output="stderr"`.

    Raises MediaError `media_tool_missing`, `media_tool_failed` (non-zero exit, with the last lines of
    stderr) or `media_tool_timeout`. The process is killed on timeout and on cancellation.
    """
    tool = Path(args[0]).name
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise MediaError("media_tool_missing", f"{tool} is not installed or not on PATH") from exc
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        await _kill(proc)
        raise MediaError("media_tool_timeout", f"{tool} did not finish within {timeout_s:g} s") from None
    except asyncio.CancelledError:
        await _kill(proc)
        raise
    if proc.returncode != 0:
        failure = MediaError("media_tool_failed", f"{tool} exited with code {proc.returncode}: {stderr_tail(stderr)}")
        if b"No space left on device" in stderr or b"Disk quota exceeded" in stderr:
            raise StoreFull(f"{tool} could not write: no space left on device") from failure
        raise failure
    chosen = stdout if output == "stdout" else stderr
    return chosen.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class StreamInfo:
    index: int
    codec_type: str
    codec_name: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    attached_pic: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    start_s: float | None = None

    @property
    def language(self) -> str | None:
        return self.tags.get("language")


@dataclass(frozen=True)
class ProbeResult:
    duration_s: float
    format_name: str
    streams: tuple[StreamInfo, ...]
    size_bytes: int | None = None

    def streams_of(self, codec_type: str) -> tuple[StreamInfo, ...]:
        return tuple(s for s in self.streams if s.codec_type == codec_type and not s.attached_pic)

    @property
    def video(self) -> StreamInfo | None:
        """The first real video stream (cover art excluded)."""
        return next(iter(self.streams_of("video")), None)

    @property
    def audio(self) -> StreamInfo | None:
        return next(iter(self.streams_of("audio")), None)

    @property
    def subtitles(self) -> tuple[StreamInfo, ...]:
        return self.streams_of("subtitle")


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def parse_rate(rate: Any) -> float | None:
    """'30000/1001' -> 29.97; '0/0', missing or malformed -> None."""
    if not isinstance(rate, str):
        return None
    num, _, den = rate.partition("/")
    numerator, denominator = _float(num), _float(den or "1")
    if not numerator or not denominator:
        return None
    return numerator / denominator


def _stream(raw: Mapping[str, Any]) -> StreamInfo:
    disposition = raw.get("disposition") or {}
    return StreamInfo(
        index=int(raw.get("index", 0)),
        codec_type=str(raw.get("codec_type", "unknown")),
        codec_name=str(raw.get("codec_name", "unknown")),
        width=_int(raw.get("width")),
        height=_int(raw.get("height")),
        fps=parse_rate(raw.get("avg_frame_rate")) or parse_rate(raw.get("r_frame_rate")),
        duration_s=_float(raw.get("duration")),
        sample_rate=_int(raw.get("sample_rate")),
        channels=_int(raw.get("channels")),
        attached_pic=bool(disposition.get("attached_pic")),
        tags={str(k): str(v) for k, v in (raw.get("tags") or {}).items()},
        start_s=_float(raw.get("start_time")),
    )


def parse_probe(document: Mapping[str, Any]) -> ProbeResult:
    """Turn ffprobe's `-print_format json -show_format -show_streams` output into a ProbeResult."""
    fmt = document.get("format") or {}
    streams = tuple(_stream(s) for s in document.get("streams") or ())
    duration = _float(fmt.get("duration"))
    if duration is None:
        duration = max((s.duration_s for s in streams if s.duration_s is not None), default=0.0)
    return ProbeResult(
        duration_s=duration,
        format_name=str(fmt.get("format_name", "unknown")),
        streams=streams,
        size_bytes=_int(fmt.get("size")),
    )


async def probe(path: Path, timeout_s: float = 30.0) -> ProbeResult:
    """Probe a media file; MediaError `media_unreadable` if it is missing, corrupt or has no streams."""
    args = [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", file_arg(path)]
    try:
        document = json.loads(await run_tool(args, timeout_s))
    except MediaError as exc:
        if exc.code != "media_tool_failed":
            raise
        raise MediaError("media_unreadable", f"cannot read {path.name}: {exc.message}") from exc
    except json.JSONDecodeError as exc:
        raise MediaError("media_unreadable", f"ffprobe returned malformed output for {path.name}") from exc
    result = parse_probe(document)
    if not result.streams:
        raise MediaError("media_unreadable", f"{path.name} contains no media streams")
    return result


async def check_complete(path: Path, timeout_s: float = 60.0) -> None:
    """MediaError `media_truncated` if a stream holds fewer packets than its header declares: a file cut
    short after a front `moov` atom probes fine (full duration) yet cannot be played to the end. Only
    demuxes (no decoding), so it costs about one read of the file."""
    args = [FFPROBE, "-v", "error", "-count_packets", "-show_entries", "stream=index,nb_frames,nb_read_packets",
            "-print_format", "json", file_arg(path)]
    try:
        document = json.loads(await run_tool(args, timeout_s))
    except json.JSONDecodeError as exc:
        raise MediaError("media_unreadable", f"ffprobe returned malformed output for {path.name}") from exc
    for stream in document.get("streams", []):
        declared, read = stream.get("nb_frames"), stream.get("nb_read_packets")
        if declared and read and str(declared).isdigit() and str(read).isdigit() and int(read) < int(declared):
            raise MediaError("media_truncated",
                             f"{path.name} stream {stream.get('index')} has {read} of {declared} packets")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
