"""Quality control of a finished output: measure (an in-process probe, a picture analysis and a
sound analysis), then judge the measures against thresholds (pure).

The pipeline runs the picture analysis once, on the rendered video, side by side with the sound
work: every output's pictures come from it by stream copy, or by scaling, padding, cropping and
drawing subtitles or a watermark, none of which can remove a black or frozen stretch (a watermark
over a black render could hide it from blackdetect: the render is what QC judges). The sound
analysis runs once, on the master, whose sound every rendition copies.

Measured: duration, size, fps, streams, audio/video sync (start and duration differences), black
stretches (blackdetect), frozen stretches (freezedetect), silence (silencedetect), integrated
loudness, loudness range and true peak (ebur128). A failed check says whether a new render could
fix it (`rerender`: black, frozen, missing or truncated video) or not (our own sound, subtitles).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from reelforge_core.finishing import LoudnessPlan, QcPlan
from reelforge_core.media import FFMPEG, ProbeResult, file_arg, run_tool
from reelforge_postprocess import remux

T = TypeVar("T")

ANALYSIS_WIDTH = 320  # detection runs on a downscaled picture: the thresholds are relative
MIN_BLACK_S = 0.1
MIN_FREEZE_S = 0.5
MIN_SILENCE_S = 0.5
TRUE_PEAK_TOLERANCE_DB = 0.5

Interval = tuple[float, float]


@dataclass(frozen=True)
class Measures:
    duration_s: float
    size_bytes: int
    fps: float | None
    width: int | None
    height: int | None
    streams: dict[str, list[str]]  # codec type -> codec names
    subtitle_languages: list[str]
    video_start_s: float | None
    video_duration_s: float | None
    audio_start_s: float | None
    audio_duration_s: float | None
    black: list[Interval] = field(default_factory=list)
    frozen: list[Interval] = field(default_factory=list)
    silence: list[Interval] = field(default_factory=list)
    integrated_lufs: float | None = None
    loudness_range_lu: float | None = None
    true_peak_dbtp: float | None = None


@dataclass(frozen=True)
class Expectations:
    duration_s: float  # the input video's length
    audio: bool
    subtitle_languages: tuple[str, ...]
    loudness: LoudnessPlan | None


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    measured: float | str | None
    limit: float | str | None
    enforced: bool
    rerender: bool
    detail: str = ""


@dataclass(frozen=True)
class QcReport:
    output: str
    measures: Measures
    checks: tuple[Check, ...]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.enforced and not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def rerender(self) -> bool:
        return any(c.rerender for c in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "passed": self.passed, "measures": asdict(self.measures),
                "checks": [asdict(c) for c in self.checks]}  # fmt: skip


# --- measuring --------------------------------------------------------------------------------

_BLACK = re.compile(r"black_start:\s*([\d.]+)\s+black_end:\s*([\d.]+)")
_FREEZE = re.compile(r"lavfi\.freezedetect\.freeze_(start|end):\s*([\d.]+)")
_SILENCE = re.compile(r"silence_(start|end):\s*(-?[\d.]+)")
_INTEGRATED = re.compile(r"I:\s+(-?[\d.]+|-inf)\s+LUFS")
_RANGE = re.compile(r"LRA:\s+(-?[\d.]+|-inf)\s+LU\b")
_PEAK = re.compile(r"Peak:\s+(-?[\d.]+|-inf)\s+dBFS")


def _paired(events: list[tuple[str, float]], end_of_media: float) -> list[Interval]:
    """start/end events -> intervals; a start without an end runs to the end of the media."""
    intervals, start = [], None
    for kind, at in events:
        if kind == "start":
            start = at
        elif start is not None:
            intervals.append((round(max(start, 0.0), 3), round(at, 3)))
            start = None
    if start is not None:
        intervals.append((round(max(start, 0.0), 3), round(end_of_media, 3)))
    return intervals


def _last_number(pattern: re.Pattern[str], text: str) -> float | None:
    found = pattern.findall(text)
    if not found or found[-1] == "-inf":
        return None
    return float(found[-1])


def parse_analysis(stderr: str, duration_s: float) -> dict[str, Any]:
    black = [(round(float(a), 3), round(float(b), 3)) for a, b in _BLACK.findall(stderr)]
    frozen = _paired([(k, float(v)) for k, v in _FREEZE.findall(stderr)], duration_s)
    silence = _paired([(k, float(v)) for k, v in _SILENCE.findall(stderr)], duration_s)
    summary = stderr[stderr.rfind("Summary:") :] if "Summary:" in stderr else ""
    return {
        "black": black, "frozen": frozen, "silence": silence,
        "integrated_lufs": _last_number(_INTEGRATED, summary),
        "loudness_range_lu": _last_number(_RANGE, summary),
        "true_peak_dbtp": _last_number(_PEAK, summary),
    }  # fmt: skip


# Decoding is most of the cost; the deblocking filter is skipped (the analysis picture is tiny).
FAST_DECODE = ["-skip_loop_filter", "all", "-flags2", "fast"]
# The picture analysis runs beside the finish (pipeline.py): one decoding thread leaves the other
# core to the finish, which is on the job's critical path, instead of both fighting for both cores.
PICTURE_DECODE = [*FAST_DECODE, "-threads", "1"]


@dataclass(frozen=True)
class PictureMeasures:
    black: list[Interval]
    frozen: list[Interval]


@dataclass(frozen=True)
class SoundMeasures:
    silence: list[Interval]
    integrated_lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None


def _analysis(path: Path, stream: str, chain: str, decode: list[str]) -> list[str]:
    return [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-v", "info", *decode, "-i", file_arg(path),
            "-filter_complex", f"[{stream}]{chain}[q]", "-map", "[q]", "-f", "null", "-"]  # fmt: skip


def picture_args(path: Path, plan: QcPlan) -> list[str]:
    chain = (f"scale={ANALYSIS_WIDTH}:-2:flags=fast_bilinear,"
             f"blackdetect=d={MIN_BLACK_S}:pix_th={plan.black_pixel_threshold:g},"
             f"freezedetect=n={plan.freeze_noise_db:g}dB:d={MIN_FREEZE_S}")  # fmt: skip
    return _analysis(path, "0:v:0", chain, ["-an", "-sn", *PICTURE_DECODE])


def sound_args(path: Path, plan: QcPlan) -> list[str]:
    chain = f"silencedetect=n={plan.silence_noise_db:g}dB:d={MIN_SILENCE_S},ebur128=peak=true:framelog=verbose"
    return _analysis(path, "0:a:0", chain, ["-vn", "-sn"])


async def measure_pictures(path: Path, duration_s: float, plan: QcPlan, timeout_s: float) -> PictureMeasures:
    """Black and frozen stretches of the first video stream (decoded fast, analysed small)."""
    found = parse_analysis(await run_tool(picture_args(path, plan), timeout_s, output="stderr"), duration_s)
    return PictureMeasures(found["black"], found["frozen"])


async def measure_sound(path: Path, duration_s: float, plan: QcPlan, timeout_s: float) -> SoundMeasures:
    """Silence, integrated loudness, loudness range and true peak of the first audio stream."""
    found = parse_analysis(await run_tool(sound_args(path, plan), timeout_s, output="stderr"), duration_s)
    return SoundMeasures(found["silence"], found["integrated_lufs"], found["loudness_range_lu"],
                         found["true_peak_dbtp"])  # fmt: skip


def combine(info: ProbeResult, pictures: PictureMeasures | None, sound: SoundMeasures | None) -> Measures:
    """One output's measures: its own streams (probed), with the picture and sound analyses that
    apply to it (its pictures came from the analysed ones; its sound is the analysed sound)."""
    streams: dict[str, list[str]] = {}
    for stream in info.streams:
        if not stream.attached_pic:
            streams.setdefault(stream.codec_type, []).append(stream.codec_name)
    video, audio = info.video, info.audio
    return Measures(
        duration_s=round(info.duration_s, 3),
        size_bytes=info.size_bytes or 0,
        fps=round(video.fps, 3) if video and video.fps else None,
        width=video.width if video else None,
        height=video.height if video else None,
        streams=streams,
        subtitle_languages=[s.language or "und" for s in info.subtitles],
        video_start_s=video.start_s if video else None,
        video_duration_s=video.duration_s if video else None,
        audio_start_s=audio.start_s if audio else None,
        audio_duration_s=audio.duration_s if audio else None,
        black=pictures.black if pictures and video else [],
        frozen=pictures.frozen if pictures and video else [],
        silence=sound.silence if sound and audio else [],
        integrated_lufs=sound.integrated_lufs if sound and audio else None,
        loudness_range_lu=sound.loudness_range_lu if sound and audio else None,
        true_peak_dbtp=sound.true_peak_dbtp if sound and audio else None,
    )


async def measure(path: Path, plan: QcPlan, timeout_s: float) -> Measures:
    """Everything about one file, each analysis on the file itself (the two run side by side)."""
    info = await asyncio.to_thread(remux.probe, path)
    pictures = measure_pictures(path, info.duration_s, plan, timeout_s) if info.video else None
    sound = measure_sound(path, info.duration_s, plan, timeout_s) if info.audio else None
    return combine(info, *await asyncio.gather(_maybe(pictures), _maybe(sound)))


async def _maybe(work: Awaitable[T] | None) -> T | None:
    return await work if work is not None else None


# --- judging (pure) ---------------------------------------------------------------------------


def _covered(intervals: list[Interval]) -> float:
    return sum(max(0.0, end - start) for start, end in intervals)


def _fraction_check(
    name: str, intervals: list[Interval], length: float, limit: float, enforce: bool, rerender: bool
) -> Check:
    fraction = round(_covered(intervals) / length, 4) if length > 0 else 0.0
    # A limit of 1.0 means "report only": even a fully black/frozen/silent output passes.
    passed = limit >= 1.0 or fraction <= limit
    return Check(name, passed, fraction, limit, enforce, rerender, f"{len(intervals)} stretch(es)")


def _seconds_check(
    name: str, intervals: list[Interval], limit: float | None, enforce: bool, rerender: bool
) -> list[Check]:
    """The stretches' total length against a limit in seconds, when the plan sets one."""
    if limit is None:
        return []
    total = round(_covered(intervals), 3)
    return [Check(name, total <= limit, total, limit, enforce, rerender, f"{len(intervals)} stretch(es)")]


def judge(measures: Measures, expect: Expectations, plan: QcPlan, output: str) -> QcReport:
    enforce = plan.enforce
    checks: list[Check] = []
    has_video = "video" in measures.streams
    checks.append(Check("video_stream", has_video, ",".join(measures.streams.get("video", [])) or None, "h264",
                        enforce, True))  # fmt: skip
    error = round(abs(measures.duration_s - expect.duration_s), 3)
    checks.append(Check("duration", error <= plan.max_duration_error_s, error, plan.max_duration_error_s, enforce,
                        True, f"{measures.duration_s:.3f} s against {expect.duration_s:.3f} s"))  # fmt: skip
    has_audio = "audio" in measures.streams
    if expect.audio:
        checks.append(Check("audio_stream", has_audio, ",".join(measures.streams.get("audio", [])) or None, "aac",
                            enforce, False))  # fmt: skip
    if has_audio and has_video:
        offsets = [
            abs((measures.audio_start_s or 0.0) - (measures.video_start_s or 0.0)),
            abs((measures.audio_duration_s or 0.0) - (measures.video_duration_s or measures.duration_s)),
        ]
        offset = round(max(offsets), 3)
        detail = f"start difference {offsets[0]:.3f} s, duration difference {offsets[1]:.3f} s"
        checks.append(Check("av_sync", offset <= plan.max_av_offset_s, offset, plan.max_av_offset_s, enforce, False,
                            detail))  # fmt: skip
    if expect.subtitle_languages:
        got = ",".join(measures.subtitle_languages)
        want = ",".join(expect.subtitle_languages)
        checks.append(Check("subtitle_tracks", got == want, got, want, enforce, False))
    if has_video:
        checks.append(_fraction_check("black", measures.black, measures.duration_s, plan.max_black_fraction,
                                      enforce, True))  # fmt: skip
        checks += _seconds_check("black_seconds", measures.black, plan.max_black_s, enforce, True)
        checks.append(_fraction_check("frozen", measures.frozen, measures.duration_s, plan.max_frozen_fraction,
                                      enforce, True))  # fmt: skip
        checks += _seconds_check("frozen_seconds", measures.frozen, plan.max_frozen_s, enforce, True)
    if has_audio:
        checks.append(_fraction_check("silence", measures.silence, measures.duration_s, plan.max_silence_fraction,
                                      enforce, False))  # fmt: skip
        checks += _seconds_check("silence_seconds", measures.silence, plan.max_silence_s, enforce, False)
    if expect.loudness is not None and has_audio:
        target = expect.loudness
        lufs = measures.integrated_lufs
        off = round(abs(lufs - target.integrated_lufs), 2) if lufs is not None else None
        checks.append(Check("loudness", off is not None and off <= plan.loudness_tolerance_lu, lufs,
                            target.integrated_lufs, enforce, False,
                            f"tolerance {plan.loudness_tolerance_lu:g} LU"))  # fmt: skip
        peak = measures.true_peak_dbtp
        ceiling = target.true_peak_dbtp + TRUE_PEAK_TOLERANCE_DB
        checks.append(Check("true_peak", peak is None or peak <= ceiling, peak, ceiling, enforce, False))
    return QcReport(output, measures, tuple(checks))


def summary(reports: list[QcReport]) -> str:
    """One line naming every failed check, for the job's error message."""
    parts = [f"{r.output}: {c.name} {c.measured} (limit {c.limit})" for r in reports for c in r.failures]
    return "quality control failed: " + "; ".join(parts) if parts else "quality control passed"
