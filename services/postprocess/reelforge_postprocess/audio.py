"""The sound track: narration segments placed at their start times, the input's own audio as a bed,
a music bed ducked under the voice (sidechain compression), fitted to the video's exact length,
then optionally normalised to a loudness target in two passes (measure, then gain + limiter),
ending as an AAC file that remux.py muxes beside the stream-copied video.

Filtergraph builders are pure; `render_mix` and `encode_normalised` run ffmpeg.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from reelforge_core.finishing import LoudnessPlan, MusicPlan
from reelforge_core.media import FFMPEG, MediaError, file_arg, run_tool
from reelforge_postprocess.narration import SpokenSegment

SAMPLE_RATE = 48_000
AUDIO_BITRATE = "128k"
BED_VOLUME = 0.35  # the input's own audio under the narration
DUCK_ATTACK_MS = 20
DUCK_RELEASE_MS = 350
QUIET = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y"]

_FORMAT = f"aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo"


@dataclass(frozen=True)
class AudioSources:
    """Where each ingredient is among ffmpeg's inputs (None = absent)."""

    bed: str | None  # e.g. "0:a:0", the input video's own audio
    speech: tuple[tuple[int, SpokenSegment], ...]  # (input index, segment)
    music: int | None


def music_input_args(path: Path) -> list[str]:
    """The music track, looped forever; the graph trims it to the video."""
    return ["-stream_loop", "-1", "-i", file_arg(path)]


def _voice_chain(index: int, spoken: SpokenSegment) -> str:
    delay_ms = round(spoken.start_s * 1000)
    trim = f"atrim=start={spoken.head_s:.6f}:duration={spoken.duration_s:.6f},asetpts=N/SR/TB"
    return f"[{index}:a]{trim},{_FORMAT},adelay={delay_ms}:all=1[s{index}]"


def mix_graph(sources: AudioSources, seconds: float, music: MusicPlan | None, out_label: str = "aout") -> str:
    """One filtergraph whose `[out_label]` is the finished mix, exactly `seconds` long."""
    samples = round(seconds * SAMPLE_RATE)
    fit = f"apad=whole_len={samples},atrim=end_sample={samples}"
    chains: list[str] = []
    layers: list[str] = []
    if sources.speech:
        chains += [_voice_chain(i, s) for i, s in sources.speech]
        labels = "".join(f"[s{i}]" for i, _ in sources.speech)
        merge = f"amix=inputs={len(sources.speech)}:normalize=0:duration=longest," if len(sources.speech) > 1 else ""
        ducked = music is not None and sources.music is not None and music.ducking
        chains.append(f"{labels}{merge}{fit}" + ("[voice]" if not ducked else ",asplit=2[voice][key]"))
        layers.append("[voice]")
    if sources.bed is not None:
        bed_volume = BED_VOLUME if sources.speech else 1.0
        chains.append(f"[{sources.bed}]{_FORMAT},volume={bed_volume},{fit}[bed]")
        layers.append("[bed]")
    if music is not None and sources.music is not None:
        chains.append(f"[{sources.music}:a]{_FORMAT},volume={music.volume_db:.2f}dB,{fit}[music]")
        if sources.speech and music.ducking:
            chains.append(
                f"[music][key]sidechaincompress=threshold={music.duck_threshold:g}:ratio={music.duck_ratio:g}"
                f":attack={DUCK_ATTACK_MS}:release={DUCK_RELEASE_MS}:detection=rms[ducked]"
            )
            layers.append("[ducked]")
        else:
            layers.append("[music]")
    if not layers:
        raise ValueError("nothing to mix")
    if len(layers) == 1:
        chains.append(f"{layers[0]}anull[{out_label}]")
    else:
        chains.append(f"{''.join(layers)}amix=inputs={len(layers)}:normalize=0:duration=longest,{fit}[{out_label}]")
    return ";".join(chains)


# --- loudness (two passes: measure, then gain + peak limiter) --------------------------------
#
# Pass one measures the mix with ebur128 (integrated loudness and true peak, EBU R128 / BS.1770);
# pass two applies the gain that lands the integrated loudness on the target, and a limiter holds
# peaks under the true-peak ceiling (with a margin, as the limiter sees samples, not true peaks).
# This is loudnorm's linear mode without its 192 kHz resampling: on this machine loudnorm cost
# 0.8 CPU-s per pass for 12 s of audio, ebur128 0.14 CPU-s and the gain stage next to nothing.

LIMITER_MARGIN_DB = 0.7
TRIAL_CORRECTIONS_DB = (0.0, 1.5, 3.0)  # extra gain tried when the limiter bites
MAX_CORRECTION_DB = 6.0
MEASURE_CHAIN = "ebur128=peak=true:framelog=verbose"


@dataclass(frozen=True)
class LoudnessMeasure:
    integrated_lufs: float
    true_peak_dbtp: float


_INTEGRATED = re.compile(r"I:\s+(-?[\d.]+|-inf)\s+LUFS")
_PEAK = re.compile(r"Peak:\s+(-?[\d.]+|-inf)\s+dBFS")


def parse_ebur128(stderr: str) -> LoudnessMeasure:
    """The integrated loudness and true peak from ebur128's closing summary."""
    summary = stderr[stderr.rfind("Summary:") :] if "Summary:" in stderr else ""
    loudness, peak = _INTEGRATED.findall(summary), _PEAK.findall(summary)
    if not loudness or not peak:
        raise MediaError("media_tool_failed", "ebur128 printed no loudness summary")
    if loudness[-1] == "-inf" or peak[-1] == "-inf":
        raise MediaError("media_silent", "the sound track is silent; it cannot be normalised")
    return LoudnessMeasure(float(loudness[-1]), float(peak[-1]))


def limited(chain: str) -> bool:
    return "alimiter=" in chain


_SUMMARY = re.compile(r"\[Parsed_ebur128_(\d+) @ [^\]]+\] Summary:\s+Integrated loudness:\s+I:\s+(-?[\d.]+|-inf) LUFS")


def parse_trials(stderr: str, count: int) -> list[float]:
    """Integrated loudness per ebur128 instance, in graph order. (ffmpeg may configure a graph
    twice and print a summary for the throwaway copy too: the last summary of an instance wins.)"""
    found = sorted({int(n): value for n, value in _SUMMARY.findall(stderr)}.items())
    if len(found) != count or any(value == "-inf" for _, value in found):
        raise MediaError("media_tool_failed", f"expected {count} loudness summaries from the trial run")
    return [float(value) for _, value in found]


def interpolate(points: list[tuple[float, float]], target: float) -> float:
    """The x where the (increasing) piecewise-linear curve through `points` reaches `target`."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if target <= y1 or (x1, y1) == points[-1]:
            return x0 + (target - y0) * (x1 - x0) / (y1 - y0) if y1 != y0 else x1
    return points[-1][0]


def _aac(out: Path) -> list[str]:
    return ["-c:a", "aac", "-aac_coder", "fast", "-b:a", AUDIO_BITRATE, "-f", "mp4", file_arg(out)]


async def fitted_chain(plan: LoudnessPlan, measured: LoudnessMeasure, mix_wav: Path, timeout_s: float) -> str:
    """The pass-two chain. A limiter that bites costs loudness, so then one trial run measures the
    result at a few extra gains and the gain is interpolated to land on the target."""
    chain = normalise_chain(plan, measured)
    if not limited(chain):
        return chain
    branches = len(TRIAL_CORRECTIONS_DB)
    graph = f"[0:a]asplit={branches}" + "".join(f"[t{i}]" for i in range(branches))
    outputs: list[str] = []
    for i, correction in enumerate(TRIAL_CORRECTIONS_DB):
        graph += f";[t{i}]{normalise_chain(plan, measured, correction)},ebur128=framelog=verbose[m{i}]"
        outputs += ["-map", f"[m{i}]", "-f", "null", "-"]
    args = [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-v", "info", "-i", file_arg(mix_wav),
            "-filter_complex", graph, *outputs]  # fmt: skip
    results = parse_trials(await run_tool(args, timeout_s, output="stderr"), branches)
    correction = interpolate(list(zip(TRIAL_CORRECTIONS_DB, results, strict=True)), plan.integrated_lufs)
    return normalise_chain(plan, measured, max(0.0, min(correction, MAX_CORRECTION_DB)))


async def encode_normalised(plan: LoudnessPlan, measured: LoudnessMeasure, mix_wav: Path, out: Path,
                            timeout_s: float) -> None:  # fmt: skip
    """Pass two, straight to AAC (trial runs only measure: encoding AAC is the costly part)."""
    chain = await fitted_chain(plan, measured, mix_wav, timeout_s)
    await run_tool([*QUIET, "-i", file_arg(mix_wav), "-af", chain, *_aac(out)], timeout_s)


def gain_db(plan: LoudnessPlan, measured: LoudnessMeasure) -> float:
    return plan.integrated_lufs - measured.integrated_lufs


def normalise_chain(plan: LoudnessPlan, measured: LoudnessMeasure, correction_db: float = 0.0) -> str:
    """Pass two: the gain to the target, then a limiter only if the gain would break the ceiling.

    `correction_db` makes up for loudness the limiter took away on a previous try."""
    gain = gain_db(plan, measured) + correction_db
    steps = [f"volume={gain:.2f}dB"]
    if measured.true_peak_dbtp + gain > plan.true_peak_dbtp - LIMITER_MARGIN_DB:
        ceiling = 10 ** ((plan.true_peak_dbtp - LIMITER_MARGIN_DB) / 20)
        steps.append(f"alimiter=limit={ceiling:.4f}:level=false:attack=5:release=50")
    return ",".join([*steps, _FORMAT])


async def render_mix(input_args: list[str], graph: str, out: Path, timeout_s: float) -> LoudnessMeasure | None:
    """Pass one. With `out` a .wav: the mix as float PCM, measured in the same run (ebur128).
    Otherwise (no loudness target): the mix straight to AAC, unmeasured."""
    args = [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-y", *input_args]
    if out.suffix != ".wav":
        await run_tool([*args, "-v", "error", "-filter_complex", graph, "-map", "[aout]", *_aac(out)], timeout_s)
        return None
    graph += f";[aout]asplit=2[mixed][probe];[probe]{MEASURE_CHAIN}[measured]"
    args += [
        "-v", "info", "-filter_complex", graph,
        "-map", "[mixed]", "-c:a", "pcm_f32le", file_arg(out),
        "-map", "[measured]", "-f", "null", "-",
    ]  # fmt: skip
    return parse_ebur128(await run_tool(args, timeout_s, output="stderr"))
