"""The finishing step: voice-over (espeak-ng), soft subtitles (mov_text) and a fast-start MP4.

The video stream is always copied, never re-encoded. Narration is synthesised, fitted to the
video (re-spoken faster if it runs long), encoded as AAC padded or trimmed to exactly the video's
length, and subtitled with cues timed in proportion to their characters. Cue building and SRT /
WebVTT rendering are pure; the I/O is three tool calls (espeak-ng, ffmpeg, ffprobe).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from reelforge_core.media import ESPEAK, FFMPEG, MediaError, ProbeResult, file_arg, probe, run_tool

SAMPLE_RATE = 48_000
AUDIO_BITRATE = "128k"
BED_VOLUME = 0.35  # the input's own audio under the narration
MIN_WPM, MAX_WPM = 80, 450
SPEECH_TAIL_S = 0.1  # narration should end at least this long before the video does
FIT_ATTEMPTS = 3
MIN_CUE_CHARS = 10

_VOICE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*(?:\+[a-z0-9]+)?", re.IGNORECASE)
_LANGUAGE = re.compile(r"[a-z]{3}")
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+")
_PHRASE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=[-\u2013\u2014]\s)")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class FinishResult:
    path: Path
    duration_s: float
    speech_seconds: float  # 0.0 without narration
    cues: tuple[Cue, ...]


# --- subtitles (pure) -------------------------------------------------------------------------


def _pack(phrases: Sequence[str], max_chars: int) -> Iterator[str]:
    """Greedily join phrases into lines of at most max_chars; over-long phrases are word-wrapped."""
    current = ""
    for phrase in phrases:
        candidate = f"{current} {phrase}" if current else phrase
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if current:
            yield current
        *full, current = textwrap.wrap(phrase, max_chars, break_long_words=True) or [""]
        yield from full
    if current:
        yield current


def cue_lines(text: str, max_chars: int) -> list[str]:
    """Sentences, then phrases, then words: every line at most max_chars, in reading order."""
    lines: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        if sentence:
            lines.extend(_pack([p for p in _PHRASE_END.split(sentence) if p], max_chars))
    return lines


def subtitle_cues(text: str, speech_seconds: float, max_chars: int = 42) -> list[Cue]:
    """Cues covering [0, speech_seconds], back to back, each lasting in proportion to its length."""
    if max_chars < MIN_CUE_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_CUE_CHARS}, got {max_chars}")
    lines = cue_lines(text, max_chars)
    if not lines:
        return []
    if not speech_seconds > 0:
        raise ValueError(f"speech_seconds must be positive, got {speech_seconds}")
    total = sum(len(line) for line in lines)
    bounds, seen = [0.0], 0
    for line in lines:
        seen += len(line)
        bounds.append(round(speech_seconds * seen / total, 3))
    return [Cue(bounds[i], bounds[i + 1], line) for i, line in enumerate(lines)]


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _timing(cue: Cue, separator: str) -> str:
    return f"{_timestamp(cue.start_s, separator)} --> {_timestamp(cue.end_s, separator)}"


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [f"{n}\n{_timing(cue, ',')}\n{cue.text.replace('-->', '->')}\n" for n, cue in enumerate(cues, 1)]
    return "\n".join(blocks)


def _vtt_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: Sequence[Cue]) -> str:
    blocks = [f"{_timing(cue, '.')}\n{_vtt_text(cue.text)}\n" for cue in cues]
    return "\n".join(["WEBVTT\n", *blocks])


# --- speech -----------------------------------------------------------------------------------


def _check_voice(voice: str, words_per_minute: int) -> None:
    if not _VOICE.fullmatch(voice):
        raise MediaError("invalid_input", f"voice must look like 'en-us' or 'de', got {voice!r}")
    if not MIN_WPM <= words_per_minute <= MAX_WPM:
        raise MediaError(
            "invalid_input",
            f"words_per_minute must be between {MIN_WPM} and {MAX_WPM}, got {words_per_minute}",
        )


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


async def synthesize_speech(
    text: str, out_wav: Path, voice: str = "en-us", words_per_minute: int = 160, timeout_s: float = 60.0
) -> float:
    """Speak `text` into a WAV file with espeak-ng; returns the spoken duration in seconds."""
    _check_voice(voice, words_per_minute)
    if not text.strip():
        raise MediaError("invalid_input", "narration text must not be empty")
    script = out_wav.with_name(out_wav.name + ".txt")  # a file, so text starting with '-' stays text
    _write_text(script, text)
    try:
        args = [ESPEAK, "-v", voice, "-s", str(words_per_minute), "-w", str(out_wav), "-f", str(script)]
        await run_tool(args, timeout_s)
    finally:
        script.unlink(missing_ok=True)
    return (await probe(out_wav)).duration_s


def faster_wpm(words_per_minute: int, speech_s: float, target_s: float) -> int:
    """A speaking rate that should bring speech_s under target_s (5% margin), capped at MAX_WPM."""
    return min(MAX_WPM, math.ceil(words_per_minute * speech_s / target_s * 1.05))


async def _fitted_speech(text: str, out_wav: Path, voice: str, target_s: float, timeout_s: float) -> float:
    """Synthesise at 160 wpm, speaking faster (up to FIT_ATTEMPTS times) until it fits in target_s."""
    wpm = 160
    speech_s = await synthesize_speech(text, out_wav, voice, wpm, timeout_s)
    for _ in range(FIT_ATTEMPTS - 1):
        if speech_s <= target_s or wpm == MAX_WPM:
            break
        wpm = faster_wpm(wpm, speech_s, target_s)
        speech_s = await synthesize_speech(text, out_wav, voice, wpm, timeout_s)
    if speech_s <= target_s:
        return speech_s
    raise MediaError(
        "narration_too_long",
        f"narration takes {speech_s:.2f} s even at {wpm} words per minute; "
        f"it must end by {target_s:.2f} s to fit the video",
    )


# --- muxing -----------------------------------------------------------------------------------


def video_seconds(info: ProbeResult) -> float:
    if info.video is None:
        raise MediaError("media_unreadable", "the input has no video stream")
    return info.video.duration_s or info.duration_s


def audio_graph(seconds: float, with_bed: bool) -> str:
    """Narration (input 1), optionally over the input's own audio, exactly `seconds` long."""
    samples = round(seconds * SAMPLE_RATE)
    fmt = f"aformat=sample_rates={SAMPLE_RATE}:channel_layouts=stereo"
    fit = f"apad=whole_len={samples},atrim=end_sample={samples}"
    if not with_bed:
        return f"[1:a]aresample={SAMPLE_RATE},{fmt},{fit}[aout]"
    return (
        f"[0:a:0]aresample={SAMPLE_RATE},{fmt},volume={BED_VOLUME}[bed];"
        f"[1:a]aresample={SAMPLE_RATE},{fmt}[voice];"
        f"[bed][voice]amix=inputs=2:duration=longest:normalize=0,{fit}[aout]"
    )


def narrated_args(
    video_in: Path, speech: Path, srt: Path, out: Path, seconds: float, with_bed: bool, language: str
) -> list[str]:
    return [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y",
        "-i", file_arg(video_in), "-i", file_arg(speech), "-i", file_arg(srt),
        "-filter_complex", audio_graph(seconds, with_bed),
        "-map", "0:v:0", "-map", "[aout]", "-map", "2:s:0",
        "-c:v", "copy", "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-c:s", "mov_text",
        "-metadata:s:a:0", f"language={language}", "-metadata:s:s:0", f"language={language}",
        "-movflags", "+faststart", "-f", "mp4", file_arg(out),
    ]  # fmt: skip


def remux_args(video_in: Path, out: Path) -> list[str]:
    return [
        FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", file_arg(video_in),
        "-map", "0:v:0", "-map", "0:a?", "-c", "copy", "-movflags", "+faststart", "-f", "mp4", file_arg(out),
    ]  # fmt: skip


async def _narrate(
    video_in: Path,
    info: ProbeResult,
    narration: str,
    voice: str,
    language: str,
    workdir: Path,
    timeout_s: float,
) -> tuple[Path, float, list[Cue]]:
    """Speech, subtitles and the mux into workdir; returns (finished file, speech seconds, cues)."""
    seconds = video_seconds(info)
    speech = workdir / "speech.wav"
    speech_s = await _fitted_speech(narration, speech, voice, max(seconds - SPEECH_TAIL_S, 0.1), timeout_s)
    cues = subtitle_cues(narration, speech_s)
    srt = workdir / "narration.srt"
    _write_text(srt, to_srt(cues))
    out = workdir / "finished.mp4"
    await run_tool(narrated_args(video_in, speech, srt, out, seconds, info.audio is not None, language), timeout_s)
    return out, speech_s, cues


async def finish_video(
    video_in: Path,
    out_path: Path,
    narration: str | None,
    voice: str = "en-us",
    language: str = "eng",
    timeout_s: float = 120.0,
) -> FinishResult:
    """Add voice-over and soft subtitles (if narrated) and write a fast-start MP4, atomically."""
    if not _LANGUAGE.fullmatch(language):
        raise MediaError("invalid_input", f"language must be an ISO 639-2 code such as 'eng', got {language!r}")
    info = await probe(video_in)
    video_seconds(info)  # fail early, before any work, if there is no video stream
    out_path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        if narration and narration.strip():
            finished, speech_s, cues = await _narrate(video_in, info, narration, voice, language, workdir, timeout_s)
        else:
            finished, speech_s, cues = workdir / "finished.mp4", 0.0, []
            await run_tool(remux_args(video_in, finished), timeout_s)
        duration = (await probe(finished)).duration_s
        finished.replace(out_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return FinishResult(out_path, duration, speech_s, tuple(cues))
