"""Narration: each segment spoken by espeak-ng, its silent head and tail measured away, and fitted
into its window (before the next segment and the end of the video) by speaking faster if needed.

The measured spoken interval of every segment is what subtitle cues are timed to.
"""

from __future__ import annotations

import array
import asyncio
import math
import re
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

from reelforge_core.finishing import MAX_WPM, MIN_WPM, NarrationPlan, Segment
from reelforge_core.media import ESPEAK, MediaError, run_tool

SPEECH_TAIL_S = 0.1  # narration should end at least this long before the video does
FIT_ATTEMPTS = 3
SILENCE_LEVEL = 0.005  # about -46 dBFS: quieter samples at the head and tail are not speech
PARALLEL_VOICES = 4  # espeak-ng runs are short and mostly start-up: all of a typical job at once

_VOICE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]+)*(?:\+[a-z0-9]+)?", re.IGNORECASE)


@dataclass(frozen=True)
class SpokenSegment:
    segment: Segment
    wav: Path
    head_s: float  # silence espeak-ng put before the speech (trimmed when mixing)
    duration_s: float  # the speech itself
    words_per_minute: int

    @property
    def start_s(self) -> float:
        return self.segment.start_s

    @property
    def end_s(self) -> float:
        return self.segment.start_s + self.duration_s


def check_voice(voice: str, words_per_minute: int) -> None:
    if not _VOICE.fullmatch(voice):
        raise MediaError("invalid_input", f"voice must look like 'en-us' or 'de', got {voice!r}")
    if not MIN_WPM <= words_per_minute <= MAX_WPM:
        raise MediaError(
            "invalid_input",
            f"words_per_minute must be between {MIN_WPM} and {MAX_WPM}, got {words_per_minute}",
        )


async def speak(text: str, out_wav: Path, voice: str, words_per_minute: int, timeout_s: float) -> None:
    """espeak-ng `text` into a WAV file. The text goes through a file, so a leading '-' stays text."""
    check_voice(voice, words_per_minute)
    if not text.strip():
        raise MediaError("invalid_input", "narration text must not be empty")
    script = out_wav.with_name(out_wav.name + ".txt")
    script.write_text(text, encoding="utf-8")
    try:
        await run_tool([ESPEAK, "-v", voice, "-s", str(words_per_minute), "-w", str(out_wav), "-f", str(script)],
                       timeout_s)  # fmt: skip
    finally:
        script.unlink(missing_ok=True)


def speech_bounds(wav: Path) -> tuple[float, float]:
    """(head silence, speech duration) of a 16-bit PCM WAV, by the first and last audible sample."""
    with wave.open(str(wav), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise MediaError("media_tool_failed", f"expected 16-bit speech from espeak-ng in {wav.name}")
        rate, channels = reader.getframerate(), reader.getnchannels()
        samples = array.array("h", reader.readframes(reader.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    level = SILENCE_LEVEL * 32768
    first = next((i for i, s in enumerate(samples) if abs(s) > level), None)
    if first is None:
        return 0.0, 0.0
    last = next(i for i in range(len(samples) - 1, -1, -1) if abs(samples[i]) > level)
    return first // channels / rate, (last - first) // channels / rate + 1 / rate


def faster_wpm(words_per_minute: int, speech_s: float, target_s: float) -> int:
    """A speaking rate that should bring speech_s under target_s (5% margin), capped at MAX_WPM."""
    return min(MAX_WPM, math.ceil(words_per_minute * speech_s / target_s * 1.05))


async def _speak_measured(segment: Segment, wav: Path, wpm: int, timeout_s: float) -> tuple[float, float]:
    await speak(segment.text, wav, segment.voice, wpm, timeout_s)
    return await asyncio.to_thread(speech_bounds, wav)


async def speak_segment(segment: Segment, wav: Path, window_s: float, fit: bool, timeout_s: float) -> SpokenSegment:
    """Speak one segment; if it overruns `window_s`, re-speak faster (up to FIT_ATTEMPTS in all)."""
    wpm = segment.words_per_minute
    head, speech = await _speak_measured(segment, wav, wpm, timeout_s)
    for _ in range(FIT_ATTEMPTS - 1 if fit else 0):
        if speech <= window_s or wpm == MAX_WPM:
            break
        wpm = faster_wpm(wpm, speech, window_s)
        head, speech = await _speak_measured(segment, wav, wpm, timeout_s)
    if speech <= 0:
        raise MediaError("invalid_input", f"narration segment at {segment.start_s:g} s produced no audible speech")
    if speech > window_s:
        raise MediaError(
            "narration_too_long",
            f"narration segment at {segment.start_s:g} s takes {speech:.2f} s at {wpm} words per minute; "
            f"it must end by {segment.start_s + window_s:.2f} s (the next segment or the end of the video)",
        )
    return SpokenSegment(segment, wav, head, speech, wpm)


def windows(segments: tuple[Segment, ...], video_s: float) -> list[float]:
    """How long each segment may speak: until the next one starts, or just before the video ends."""
    ends = [s.start_s for s in segments[1:]] + [video_s - SPEECH_TAIL_S]
    result = []
    for segment, end in zip(segments, ends, strict=True):
        if segment.start_s >= video_s - SPEECH_TAIL_S:
            raise MediaError(
                "invalid_input",
                f"narration segment at {segment.start_s:g} s starts after the video ends ({video_s:.2f} s)",
            )
        result.append(max(end - segment.start_s, 0.1))
    return result


async def speak_narration(plan: NarrationPlan, video_s: float, workdir: Path, timeout_s: float) -> list[SpokenSegment]:
    """Every segment spoken (PARALLEL_VOICES at a time) and measured, in start order."""
    gate = asyncio.Semaphore(PARALLEL_VOICES)

    async def one(index: int, segment: Segment, window: float) -> SpokenSegment:
        async with gate:
            return await speak_segment(segment, workdir / f"speech{index}.wav", window, plan.fit_by_speeding_up,
                                       timeout_s)  # fmt: skip

    spans = windows(plan.segments, video_s)
    return list(
        await asyncio.gather(*(one(i, s, w) for i, (s, w) in enumerate(zip(plan.segments, spans, strict=True))))
    )
