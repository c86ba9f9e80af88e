"""The finishing pipeline: run the steps a FinishPlan asks for, in order, inside a work directory.

  narration (espeak-ng per segment, measured)  ->  cues per subtitle language (SRT/WebVTT files)
  sound (segments + bed + ducked music [-> loudness pass one])  ->  master mux: video stream-copied,
  AAC sound [loudness pass two], one mov_text track per language, faststart
  pictures (burn-in, watermark, renditions; one encode run, or none)  ->  thumbnails  ->  QC

Every step is skipped when the plan does not ask for it; timings are kept per stage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from reelforge_core.media import FFMPEG, MediaError, ProbeResult, file_arg, probe, run_tool
from reelforge_postprocess import audio, qc
from reelforge_postprocess.narration import SpokenSegment, speak_narration
from reelforge_postprocess.options import FinishPlan
from reelforge_postprocess.subtitles import Cue, segment_cues, to_ass, to_srt, to_webvtt
from reelforge_postprocess.thumbnails import ThumbnailFiles, make_thumbnails
from reelforge_postprocess.video import Picture, encode_pictures

QUIET = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y"]
MAIN = "main"
PARALLEL_QC = 2


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
    timings: dict[str, float] = field(default_factory=dict)

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


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @asynccontextmanager
    async def stage(self, name: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 4)


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


def remux_args(video_in: Path, out: Path) -> list[str]:
    return [*QUIET, "-i", file_arg(video_in), "-map", "0:v:0", "-map", "0:a?", "-c", "copy",
            "-movflags", "+faststart", "-f", "mp4", file_arg(out)]  # fmt: skip


def mux_args(
    inputs: list[str],
    graph: str,
    subtitles: list[SubtitleFiles],
    first_subtitle_input: int,
    audio_language: str,
    out: Path,
    measure_loudness: bool = False,
) -> list[str]:
    args = [*QUIET, *inputs]
    if measure_loudness:  # ebur128's summary is printed at info level
        args = [*args[: args.index("-v")], "-nostats", "-v", "info", *args[args.index("-v") + 2 :]]
        graph = graph.replace("[aout]", "[final]") + f";[final]asplit=2[aout][check];[check]{audio.MEASURE_CHAIN}[loud]"
    for track in subtitles:
        assert track.srt is not None
        args += ["-i", file_arg(track.srt)]
    args += ["-filter_complex", graph, "-map", "0:v:0", "-map", "[aout]"]
    for k in range(len(subtitles)):
        args += ["-map", f"{first_subtitle_input + k}:s:0"]
    args += ["-c:v", "copy", "-c:a", "aac", "-aac_coder", "fast", "-b:a", audio.AUDIO_BITRATE, "-c:s", "mov_text",
             "-metadata:s:a:0", f"language={audio_language}"]  # fmt: skip
    for k, track in enumerate(subtitles):
        args += [f"-metadata:s:s:{k}", f"language={track.language}"]
    args += ["-movflags", "+faststart", "-f", "mp4", file_arg(out)]
    return [*args, "-map", "[loud]", "-f", "null", "-"] if measure_loudness else args


async def _master(
    video_in: Path, info: ProbeResult, plan: FinishPlan, spoken: list[SpokenSegment], subtitles: list[SubtitleFiles],
    music_path: Path | None, workdir: Path, watch: _Stopwatch, timeout_s: float,
) -> Path:  # fmt: skip
    """Sound and soft subtitles around the stream-copied video."""
    master = workdir / "master.mp4"
    seconds = video_seconds(info)
    has_music = plan.music is not None and music_path is not None
    if not (spoken or has_music or (plan.loudness and info.audio)):
        async with watch.stage("mux"):
            await run_tool(remux_args(video_in, master), timeout_s)
        return master
    inputs = ["-i", file_arg(video_in)] + [a for s in spoken for a in ("-i", file_arg(s.wav))]
    speech = tuple((i + 1, s) for i, s in enumerate(spoken))
    music_index = None
    if has_music:
        assert music_path is not None
        music_index = len(spoken) + 1
        inputs += audio.music_input_args(music_path)
    sources = audio.AudioSources("0:a:0" if info.audio else None, speech, music_index)
    graph = audio.mix_graph(sources, seconds, plan.music)
    language = plan.narration.language if plan.narration else "und"
    if plan.loudness is None:
        async with watch.stage("mux"):
            first_subtitle = len(spoken) + 1 + (1 if has_music else 0)
            await run_tool(mux_args(inputs, graph, subtitles, first_subtitle, language, master), timeout_s)
        return master
    mix = workdir / "mix.wav"
    async with watch.stage("loudness_measure"):
        measured = await audio.render_mix(inputs, graph, mix, True, timeout_s)
    assert measured is not None
    inputs = ["-i", file_arg(video_in), "-i", file_arg(mix)]
    correction = 0.0
    for attempt in range(2):
        graph = f"[1:a]{audio.normalise_chain(plan.loudness, measured, correction)}[aout]"
        async with watch.stage("mux"):
            stderr = await run_tool(mux_args(inputs, graph, subtitles, 2, language, master, measure_loudness=True),
                                    timeout_s, output="stderr")  # fmt: skip
        off_by = plan.loudness.integrated_lufs - audio.parse_ebur128(stderr).integrated_lufs
        if abs(off_by) <= audio.RETRY_OFF_BY_LU or attempt:
            break
        correction += off_by
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


async def _measure(gate: asyncio.Semaphore, path: Path, plan: FinishPlan, timeout_s: float) -> qc.Measures:
    async with gate:
        return await qc.measure(path, plan.qc, timeout_s)


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
        info = await probe(video_in)
    seconds = video_seconds(info)
    assert info.video is not None
    width, height = info.video.width or 0, info.video.height or 0
    spoken: list[SpokenSegment] = []
    if plan.narration is not None:
        async with watch.stage("narration"):
            spoken = await speak_narration(plan.narration, seconds, workdir, timeout_s)
    async with watch.stage("subtitles"):
        cues = language_cues(plan, spoken)
        subtitles = write_subtitle_files(plan, cues, workdir)
    master = await _master(video_in, info, plan, spoken, subtitles, music_path, workdir, watch, timeout_s)
    pictures, shapes = _pictures(plan, width, height, cues, workdir)
    if pictures:
        async with watch.stage("pictures"):
            await encode_pictures(master, pictures, plan.watermark, x264_preset, x264_crf, timeout_s)
    encoded = {p.name: p.path for p in pictures}
    paths = {name: encoded[picture] if picture else master for name, (picture, _, _) in shapes.items()}
    main_path = paths[MAIN]
    async with watch.stage("thumbnails"):
        thumbs = await make_thumbnails(main_path, seconds, width, height, plan.thumbnails, workdir, timeout_s)
    expect = qc.Expectations(
        duration_s=seconds,
        audio=bool(spoken) or plan.music is not None or info.audio is not None,
        subtitle_languages=tuple(cues),
        loudness=plan.loudness,
    )
    names = [MAIN, *(r.name for r in plan.renditions)]
    unique = list(dict.fromkeys(paths[name] for name in names))
    gate = asyncio.Semaphore(PARALLEL_QC)
    async with watch.stage("qc"):
        measured = await asyncio.gather(*(_measure(gate, p, plan, timeout_s) for p in unique))
    by_path = dict(zip(unique, measured, strict=True))
    outputs = []
    for name in names:
        picture, w, h = shapes[name]
        report = qc.judge(by_path[paths[name]], expect, plan.qc, name)
        outputs.append(Output(name, paths[name], w, h, picture is None, report))
    return PipelineResult(outputs[0], outputs[1:], subtitles, cues, spoken, thumbs, watch.timings)
