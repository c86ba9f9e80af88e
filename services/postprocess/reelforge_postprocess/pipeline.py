"""The finishing pipeline: run the steps a FinishPlan asks for, in order, inside a work directory.

  probe (in process)  ->  QC picture analysis of the rendered video, in the background
  narration (espeak-ng per segment, measured)  ->  cues per subtitle language (SRT/WebVTT files)
  sound (segments + bed + ducked music, measured) [-> gain + limiter fitted in process] as an AAC file
  master mux (in process): video stream-copied, the AAC sound, one mov_text track per language, faststart
  pictures (burn-in, watermark, renditions; one encode run, or none)
  thumbnails and QC sound analysis side by side  ->  QC judged per output

Every step is skipped when the plan does not ask for it; wall and CPU time are kept per stage
(stages that overlap, such as qc_pictures, share the CPU time of the moments they overlap).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from reelforge_core.finishing import FinishPlan
from reelforge_core.media import MediaError, ProbeResult, file_arg
from reelforge_postprocess import audio, loudness, qc, remux
from reelforge_postprocess.narration import SpokenSegment, speak_narration
from reelforge_postprocess.subtitles import Cue, segment_cues, to_ass, to_srt, to_webvtt
from reelforge_postprocess.thumbnails import ThumbnailFiles, make_thumbnails
from reelforge_postprocess.video import Picture, encode_pictures

MAIN = "main"
T = TypeVar("T")


@dataclass(frozen=True)
class Output:
    name: str
    path: Path
    width: int
    height: int
    stream_copied: bool  # the video was copied from the input, not re-encoded
    qc: qc.QcReport


@dataclass(frozen=True)
class SubtitleFiles:
    language: str
    srt: Path | None
    vtt: Path | None


@dataclass
class PipelineResult:
    main: Output
    renditions: list[Output]
    subtitles: list[SubtitleFiles]
    cues: dict[str, list[Cue]]
    spoken: list[SpokenSegment]
    thumbnails: ThumbnailFiles
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    cpu: dict[str, float] = field(default_factory=dict)  # tool CPU seconds per stage

    @property
    def reports(self) -> list[qc.QcReport]:
        return [self.main.qc, *(r.qc for r in self.renditions)]

    @property
    def qc_passed(self) -> bool:
        return all(r.passed for r in self.reports)

    @property
    def rerender(self) -> bool:
        return any(r.rerender for r in self.reports)


def video_seconds(info: ProbeResult) -> float:
    if info.video is None:
        raise MediaError("media_unreadable", "the input has no video stream")
    return info.video.duration_s or info.duration_s


def _cpu_s() -> float:
    """CPU seconds of this process (in-process muxing) and of the tools it ran and reaped."""
    own, tools = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + tools.ru_utime + tools.ru_stime


class _Stopwatch:
    """Wall seconds per stage, and CPU seconds spent meanwhile (in process and in ffmpeg, espeak-ng)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @asynccontextmanager
    async def stage(self, name: str) -> AsyncIterator[None]:
        started, cpu = time.perf_counter(), _cpu_s()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 4)
            self.cpu[name] = round(self.cpu.get(name, 0.0) + _cpu_s() - cpu, 4)


def language_cues(plan: FinishPlan, spoken: list[SpokenSegment]) -> dict[str, list[Cue]]:
    """Per subtitle language, cues timed to each segment's measured speech."""
    if plan.subtitles is None or plan.narration is None:
        return {}
    cues: dict[str, list[Cue]] = {}
    for language in plan.subtitles.languages:
        cues[language] = [
            cue
            for s in spoken
            for cue in segment_cues(s.segment.text_in(language), s.start_s, s.duration_s, plan.subtitles.max_chars)
        ]
    return cues


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_subtitle_files(plan: FinishPlan, cues: dict[str, list[Cue]], workdir: Path) -> list[SubtitleFiles]:
    files = []
    for language, track in cues.items():
        srt = _write(workdir / f"subtitles.{language}.srt", to_srt(track))
        vtt = (
            _write(workdir / f"subtitles.{language}.vtt", to_webvtt(track))
            if plan.subtitles and plan.subtitles.webvtt
            else None
        )
        files.append(SubtitleFiles(language, srt, vtt))
    return files


def subtitle_tracks(cues: dict[str, list[Cue]]) -> list[remux.SubtitleTrack]:
    return [remux.SubtitleTrack(language, track) for language, track in cues.items()]


async def _master(
    video_in: Path, info: ProbeResult, plan: FinishPlan, spoken: list[SpokenSegment], cues: dict[str, list[Cue]],
    music_path: Path | None, workdir: Path, watch: _Stopwatch, timeout_s: float,
) -> Path:  # fmt: skip
    """Sound and soft subtitles around the stream-copied video: the sound is made by ffmpeg as an
    AAC file (the video is neither decoded nor rewritten), then everything is muxed in process."""
    master = workdir / "master.mp4"
    seconds = video_seconds(info)
    has_music = plan.music is not None and music_path is not None
    language = plan.narration.language if plan.narration else None
    tracks = subtitle_tracks(cues)
    if not (spoken or has_music or (plan.loudness and info.audio)):
        async with watch.stage("mux"):
            await asyncio.to_thread(remux.mux, master, video_in, video_in if info.audio else None, tracks)
        return master
    # The video file is an input only for its own sound (the bed), and then only its audio is read.
    inputs = ["-vn", "-sn", "-dn", "-i", file_arg(video_in)] if info.audio else []
    first = 1 if info.audio else 0
    inputs += [a for s in spoken for a in ("-i", file_arg(s.wav))]
    speech = tuple((first + i, s) for i, s in enumerate(spoken))
    music_index = None
    if has_music:
        assert music_path is not None
        music_index = first + len(spoken)
        inputs += audio.music_input_args(music_path)
    sources = audio.AudioSources("0:a:0" if info.audio else None, speech, music_index)
    graph = audio.mix_graph(sources, seconds, plan.music)
    sound = workdir / "sound.m4a"
    if plan.loudness is None:
        async with watch.stage("sound"):
            await audio.render_mix(inputs, graph, sound, timeout_s)
    else:
        mix = workdir / "mix.wav"
        async with watch.stage("loudness_measure"):
            measured = await audio.render_mix(inputs, graph, mix, timeout_s)
        assert measured is not None
        async with watch.stage("loudness_apply"):
            await loudness.normalise_to_aac(plan.loudness, measured, mix, sound)
    async with watch.stage("mux"):
        await asyncio.to_thread(remux.mux, master, video_in, sound, tracks, language)
    return master


def _pictures(
    plan: FinishPlan, width: int, height: int, cues: dict[str, list[Cue]], workdir: Path
) -> tuple[list[Picture], dict[str, tuple[str | None, int, int]]]:
    """What to encode (each distinct frame once), and for every output (the picture it is, or None
    for the stream-copied master; width; height)."""
    burn = plan.subtitles.burn_in if plan.subtitles else None
    watermark_file = _write(workdir / "watermark.txt", plan.watermark.text) if plan.watermark else None
    repaint = burn is not None or watermark_file is not None
    wanted = [(MAIN, width, height, None)] + [(r.name, r.width, r.height, r.fit) for r in plan.renditions]
    pictures: dict[tuple[int, int, str | None], Picture] = {}
    shapes: dict[str, tuple[str | None, int, int]] = {}
    for name, w, h, fit in wanted:
        frame = (w, h, None if (w, h) == (width, height) else fit)
        if frame[2] is None and not repaint:
            shapes[name] = (None, w, h)
            continue
        if frame not in pictures:
            ass = None
            if burn is not None:
                ass = _write(workdir / f"burn.{name}.ass", to_ass(cues[burn.language], w, h, burn.style))
            pictures[frame] = Picture(name, workdir / f"out.{name}.mp4", w, h, frame[2], ass, watermark_file)
        shapes[name] = (pictures[frame].name, w, h)
    return list(pictures.values()), shapes


async def run_pipeline(
    video_in: Path,
    plan: FinishPlan,
    workdir: Path,
    *,
    music_path: Path | None = None,
    x264_preset: str = "veryfast",
    x264_crf: int = 21,
    timeout_s: float = 300.0,
) -> PipelineResult:
    """Run every step the plan asks for; all files are written inside `workdir`."""
    watch = _Stopwatch()
    async with watch.stage("probe"):
        info = await asyncio.to_thread(remux.probe, video_in)
    seconds = video_seconds(info)
    assert info.video is not None
    width, height = info.video.width or 0, info.video.height or 0
    # QC's picture analysis needs only the rendered video: it runs beside all the sound work.
    pictures_qc = asyncio.create_task(_timed(watch, "qc_pictures", qc.measure_pictures(video_in, seconds, plan.qc,
                                                                                        timeout_s)))  # fmt: skip
    try:
        spoken: list[SpokenSegment] = []
        if plan.narration is not None:
            async with watch.stage("narration"):
                spoken = await speak_narration(plan.narration, seconds, workdir, timeout_s)
        async with watch.stage("subtitles"):
            cues = language_cues(plan, spoken)
            subtitles = write_subtitle_files(plan, cues, workdir)
        master = await _master(video_in, info, plan, spoken, cues, music_path, workdir, watch, timeout_s)
        pictures, shapes = _pictures(plan, width, height, cues, workdir)
        if pictures:
            async with watch.stage("pictures"):
                await encode_pictures(master, pictures, plan.watermark, x264_preset, x264_crf, timeout_s)
        encoded = {p.name: p.path for p in pictures}
        paths = {name: encoded[picture] if picture else master for name, (picture, _, _) in shapes.items()}
        main_path = paths[MAIN]
        names = [MAIN, *(r.name for r in plan.renditions)]
        master_info = await asyncio.to_thread(remux.probe, master)
        sound_qc = (
            _timed(watch, "qc_sound", qc.measure_sound(master, master_info.duration_s, plan.qc, timeout_s))
            if master_info.audio else _nothing()
        )  # fmt: skip
        thumbs, sound_measures, picture_measures = await asyncio.gather(
            _timed(watch, "thumbnails", make_thumbnails(main_path, seconds, width, height, plan.thumbnails, workdir,
                                                        timeout_s)),
            sound_qc,
            pictures_qc,
        )  # fmt: skip
    finally:
        pictures_qc.cancel()
    expect = qc.Expectations(
        duration_s=seconds,
        audio=bool(spoken) or plan.music is not None or info.audio is not None,
        subtitle_languages=tuple(cues),
        loudness=plan.loudness,
    )
    outputs = []
    for name in names:
        picture, w, h = shapes[name]
        output_info = master_info if paths[name] == master else await asyncio.to_thread(remux.probe, paths[name])
        measures = qc.combine(output_info, picture_measures, sound_measures)
        outputs.append(Output(name, paths[name], w, h, picture is None, qc.judge(measures, expect, plan.qc, name)))
    return PipelineResult(outputs[0], outputs[1:], subtitles, cues, spoken, thumbs, watch.timings, watch.cpu)


async def _timed(watch: _Stopwatch, stage: str, work: Awaitable[T]) -> T:
    async with watch.stage(stage):
        return await work


async def _nothing() -> None:
    return None
