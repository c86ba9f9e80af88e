"""The default finish, as one call: voice-over (espeak-ng), a soft mov_text subtitle track and a
fast-start MP4, the video stream-copied. It is the pipeline (pipeline.py) with a one-segment plan;
the cue and speech helpers it always offered are re-exported here.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reelforge_core.finishing import (
    DEFAULT_WPM,
    FinishPlan,
    NarrationPlan,
    QcPlan,
    Segment,
    SubtitlesPlan,
)
from reelforge_core.media import MediaError, probe
from reelforge_postprocess.narration import faster_wpm, speak
from reelforge_postprocess.pipeline import run_pipeline, video_seconds
from reelforge_postprocess.subtitles import Cue, cue_lines, subtitle_cues, to_srt, to_webvtt

__all__ = [
    "Cue", "FinishResult", "cue_lines", "faster_wpm", "finish_video", "subtitle_cues", "synthesize_speech",
    "to_srt", "to_webvtt", "video_seconds",
]  # fmt: skip


@dataclass(frozen=True)
class FinishResult:
    path: Path
    duration_s: float
    speech_seconds: float  # 0.0 without narration
    cues: tuple[Cue, ...]


async def synthesize_speech(
    text: str, out_wav: Path, voice: str = "en-us", words_per_minute: int = DEFAULT_WPM, timeout_s: float = 60.0
) -> float:
    """Speak `text` into a WAV file with espeak-ng; returns the file's duration in seconds."""
    await speak(text, out_wav, voice, words_per_minute, timeout_s)
    return (await probe(out_wav)).duration_s


def default_plan(narration: str | None, voice: str, language: str) -> FinishPlan:
    if not narration or not narration.strip():
        return FinishPlan(qc=QcPlan(enforce=False))
    return FinishPlan(
        narration=NarrationPlan(language, (Segment(0.0, narration, voice, DEFAULT_WPM, language),)),
        subtitles=SubtitlesPlan((language,)),
        qc=QcPlan(enforce=False),
    )


async def finish_video(
    video_in: Path,
    out_path: Path,
    narration: str | None,
    voice: str = "en-us",
    language: str = "eng",
    timeout_s: float = 120.0,
) -> FinishResult:
    """Add voice-over and soft subtitles (if narrated) and write a fast-start MP4, atomically."""
    if not (len(language) == 3 and language.isascii() and language.isalpha() and language.islower()):
        raise MediaError("invalid_input", f"language must be an ISO 639-2 code such as 'eng', got {language!r}")
    video_seconds(await probe(video_in))  # fail early, before any work, if there is no video stream
    out_path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        result = await run_pipeline(video_in, default_plan(narration, voice, language), workdir, timeout_s=timeout_s)
        result.main.path.replace(out_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    speech = sum(s.duration_s for s in result.spoken)
    cues = tuple(next(iter(result.cues.values()), []))
    return FinishResult(out_path, result.main.qc.measures.duration_s, speech, cues)
