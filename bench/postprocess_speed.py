"""How many times faster than real time postprocess finishes a 12 s 1280x720 clip, per stage.

  ./run bench bench/postprocess_speed.py

Three scenarios (targets from issue 8):
  A. sound + soft subtitles muxed by stream copy (AAC made, cues given): the pipeline's in-process
     mux (remux.mux), and the ffmpeg program doing the same for comparison      target 200x
  B. full sound: 3 narration segments (en, ru, cmn), music bed ducked, loudness to -14 LUFS
     (measured in the mixing run, gain + limiter fitted in process, one AAC encode), 3 soft
     subtitle tracks; QC runs alongside, shown apart                                target 20x
  C. subtitles burned in at 720p (one x264 encode; superfast (the default), ultrafast, veryfast)  target 3x

"x real time" = clip seconds / wall seconds. The machine is shared, so the CPU seconds (this
process's and its ffmpeg/espeak-ng children's) are printed too, with the load average. Bounded to
about a minute.
"""

from __future__ import annotations

import asyncio
import os
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from reelforge.postprocess.v1 import postprocess_pb2 as pb
from reelforge_core.finishing import SubtitleStyle, build_plan
from reelforge_core.media import FFMPEG, file_arg, run_tool
from reelforge_postprocess import qc, remux
from reelforge_postprocess.pipeline import run_pipeline
from reelforge_postprocess.remux import SubtitleTrack
from reelforge_postprocess.subtitles import Cue, to_ass
from reelforge_postprocess.video import Picture, encode_pictures

CLIP_S = 12.0
BUDGET_S = 55.0
QUIET = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y"]


def child_cpu() -> float:
    own, tools = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + tools.ru_utime + tools.ru_stime


async def timed(work: Callable[[], Awaitable[object]]) -> tuple[float, float, object]:
    cpu, wall = child_cpu(), time.perf_counter()
    result = await work()
    return time.perf_counter() - wall, child_cpu() - cpu, result


def line(name: str, wall: float, cpu: float, target: float | None = None) -> str:
    speed = CLIP_S / wall if wall else float("inf")
    verdict = "" if target is None else f"  (target {target:g}x: {'met' if speed >= target else 'NOT met'})"
    by_cpu = f"{CLIP_S / cpu:7.1f}x" if cpu else "    n/a"
    return (
        f"  {name:<44} {wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms cpu"
        f"  {speed:7.1f}x real time ({by_cpu} per CPU-s){verdict}"
    )


async def make_inputs(work: Path) -> dict[str, Path]:
    video = work / "clip.mp4"
    await run_tool([*QUIET, "-f", "lavfi", "-i", f"testsrc2=s=1280x720:r=24:d={CLIP_S}", "-c:v", "libx264",
                    "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", file_arg(video)], 120)  # fmt: skip
    sound = work / "sound.m4a"
    await run_tool([*QUIET, "-f", "lavfi", "-i", f"sine=f=330:d={CLIP_S}", "-c:a", "aac", file_arg(sound)], 60)
    music = work / "music.m4a"
    graph = "sine=f=220:d=4[t];anoisesrc=d=4:a=0.02[n];[t][n]amix=inputs=2"
    await run_tool([*QUIET, "-filter_complex", graph, "-c:a", "aac", file_arg(music)], 60)
    srt = work / "subs.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:03,000\nPure water.\n\n2\n00:00:04,000 --> 00:00:07,000\nEvery day.\n")
    return {"video": video, "sound": sound, "music": music, "srt": srt}


def full_options() -> pb.PostprocessOptions:
    options = pb.PostprocessOptions()
    options.narration.segments.add(
        start_seconds=0.5, text="Meet AquaPure. Clean water, straight from your tap.",
        translations={"rus": "Встречайте АкваПьюр.", "zho": "认识AquaPure。"},
    )  # fmt: skip
    options.narration.segments.add(
        start_seconds=5.0, text="Вода чистая, как в горах.", voice="ru",  # noqa: RUF001
        translations={"eng": "Water as clean as the mountains.", "zho": "水像山里一样干净。"},
    )  # fmt: skip
    options.narration.segments.add(
        start_seconds=8.5, text="你好\uff0c世界。", voice="cmn", translations={"eng": "Hello, world.", "rus": "Привет."}
    )
    options.subtitles.languages.extend(["eng", "rus", "zho"])
    options.music.uri = "cas://sha256/bench"
    options.loudness.enabled = True
    return options


async def main() -> None:
    started = time.perf_counter()
    print(f"postprocess speed, {CLIP_S:g} s 1280x720 24 fps clip; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = await make_inputs(work)

        floor = [await timed(lambda: run_tool([FFMPEG, "-hide_banner", "-version"], 30)) for _ in range(3)]
        wall, cpu, _ = min(floor, key=lambda t: t[0])
        print(f"  floor: starting ffmpeg at all (ffmpeg -version) takes {wall * 1000:.0f} ms wall, "
              f"{cpu * 1000:.0f} ms cpu here")  # fmt: skip
        print("A. sound + soft subtitles muxed by stream copy")
        tracks = [SubtitleTrack("eng", [Cue(0.5, 3.0, "Pure water."), Cue(4.0, 7.0, "Every day.")])]
        runs = []
        for n in range(7):
            out = work / f"inproc{n}.mp4"
            wall, cpu, _ = await timed(
                lambda out=out: asyncio.to_thread(remux.mux, out, inputs["video"], inputs["sound"], tracks, "eng")  # type: ignore[misc]
            )
            runs.append((wall, cpu))
        print(line("mux in process (remux.mux), best of 7", *min(runs), target=200))
        print(line("mux in process (remux.mux), median of 7", *sorted(runs)[len(runs) // 2]))
        runs = []
        for n in range(3):
            out = work / f"mux{n}.mp4"
            args = [*QUIET, "-i", file_arg(inputs["video"]), "-i", file_arg(inputs["sound"]), "-i",
                    file_arg(inputs["srt"]), "-map", "0:v", "-map", "1:a", "-map", "2:s", "-c:v", "copy", "-c:a",
                    "copy", "-c:s", "mov_text", "-metadata:s:s:0", "language=eng", "-movflags", "+faststart",
                    file_arg(out)]  # fmt: skip
            wall, cpu, _ = await timed(lambda args=args: run_tool(args, 30))  # type: ignore[misc]
            runs.append((wall, cpu))
        print(line("mux by the ffmpeg program (before), best of 3", *min(runs)))

        print("B. narration (en, ru, cmn) + ducked music + loudness + 3 soft subtitle tracks")
        plan = build_plan(full_options())
        stage_runs: list[dict[str, float]] = []
        totals = []
        for n in range(2):
            (work / f"full{n}").mkdir()
            wall, cpu, result = await timed(
                lambda n=n: run_pipeline(inputs["video"], plan, work / f"full{n}", music_path=inputs["music"])  # type: ignore[misc]
            )
            timings = result.timings  # type: ignore[attr-defined]
            stage_runs.append(result.cpu)  # type: ignore[attr-defined]
            totals.append((wall, cpu, timings))
            loudness = result.main.qc.measures.integrated_lufs  # type: ignore[attr-defined]
        stages = ("probe", "narration", "subtitles", "loudness_measure", "loudness_apply", "mux")
        best = min(range(len(totals)), key=lambda i: sum(totals[i][2].get(stage, 0.0) for stage in stages))
        wall, cpu, timings = totals[best]
        stage_cpu = stage_runs[best]
        for stage in stages:
            print(line(f"  stage {stage}", timings.get(stage, 0.0), stage_cpu.get(stage, 0.0)))
        # The picture analysis overlaps the stages above, so their CPU figures include part of it: the
        # CPU of the finish alone is the run's total less the QC analyses, each timed again alone.
        master = work / f"full{best}" / "master.mp4"
        _, pictures_cpu, _ = await timed(lambda: qc.measure_pictures(inputs["video"], CLIP_S, plan.qc, 60))
        _, sound_cpu, _ = await timed(lambda: qc.measure_sound(master, CLIP_S, plan.qc, 60))
        finish_wall = sum(timings.get(stage, 0.0) for stage in stages)
        print(line(f"finish without QC (best of {len(totals)}; cpu: total less QC)", finish_wall,
                   cpu - pictures_cpu - sound_cpu - stage_cpu.get("thumbnails", 0.0), target=20))  # fmt: skip
        print("  QC (qc_pictures runs from the start, beside the stages above; their cpu includes part of it):")
        print(line("  stage qc_pictures (cpu: the analysis alone)", timings.get("qc_pictures", 0.0), pictures_cpu))
        print(line("  stage qc_sound (cpu: the analysis alone)", timings.get("qc_sound", 0.0), sound_cpu))
        print(line("  stage thumbnails", timings.get("thumbnails", 0.0), stage_cpu.get("thumbnails", 0.0)))
        print(line("finish with QC (same run)", wall, cpu))
        print(f"  measured integrated loudness of the output: {loudness} LUFS (target -14)")

        print("C. subtitles burned in at 1280x720 (one decode + libass + x264 encode, sound and subtitles copied)")
        master = work / "full0" / "master.mp4"
        cues = [Cue(0.5, 3.0, "Meet AquaPure."), Cue(3.0, 6.0, "Clean water, straight from your tap."),
                Cue(6.5, 11.0, "Pure water for every home, every day.")]  # fmt: skip
        script = work / "burn.ass"
        script.write_text(to_ass(cues, 1280, 720, SubtitleStyle(size_fraction=0.06)), encoding="utf-8")
        for preset in ("superfast", "ultrafast", "veryfast"):
            if preset != "superfast" and time.perf_counter() - started > BUDGET_S - 15:
                print(f"  (x264 {preset} skipped: the minute is up)")
                continue
            picture = Picture("main", work / f"burn.{preset}.mp4", 1280, 720, None, script, None)
            wall, cpu, _ = await timed(lambda p=picture, x=preset: encode_pictures(master, [p], None, x, 21, 120))  # type: ignore[misc]
            print(line(f"burn-in, x264 {preset}", wall, cpu, target=3))
    print(f"bench took {time.perf_counter() - started:.1f} s; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
