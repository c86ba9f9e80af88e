"""The sound track: narration segments placed at their start times, the input's own audio as a bed,
a music bed ducked under the voice (sidechain compression), fitted to the video's exact length,
measured when a loudness target is set (loudness.py then brings it to the target in process),
ending as an AAC file that remux.py muxes beside the stream-copied video.

Filtergraph builders are pure; `render_mix` runs ffmpeg.
"""

from __future__ import annotations

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


# --- loudness: measured here, applied in process (loudness.py) ---------------------------------
#
# The run that makes the mix measures it with ebur128 (integrated loudness and true peak, EBU R128 /
# BS.1770); loudness.py then applies the gain that lands on the target, with a limiter holding the
# true-peak ceiling. This is loudnorm's linear mode without its 192 kHz resampling: on this machine
# loudnorm cost 0.8 CPU-s per pass for 12 s of audio, ebur128 0.14 CPU-s.

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


def gain_db(plan: LoudnessPlan, measured: LoudnessMeasure) -> float:
    return plan.integrated_lufs - measured.integrated_lufs


# The fast coder: on 12 s of narration over music it took 0.21 CPU-s here against 0.64 for the
# default two-loop search (on a pure tone the other way round, so measure on real mixes).
def aac_args(out: Path) -> list[str]:
    return ["-c:a", "aac", "-aac_coder", "fast", "-b:a", AUDIO_BITRATE, "-f", "mp4", file_arg(out)]


async def render_mix(input_args: list[str], graph: str, out: Path, timeout_s: float) -> LoudnessMeasure | None:
    """Pass one. With `out` a .wav: the mix as float PCM, measured in the same run (ebur128).
    Otherwise (no loudness target): the mix straight to AAC, unmeasured."""
    args = [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-y", *input_args]
    if out.suffix != ".wav":
        await run_tool([*args, "-v", "error", "-filter_complex", graph, "-map", "[aout]", *aac_args(out)], timeout_s)
        return None
    graph += f";[aout]asplit=2[mixed][probe];[probe]{MEASURE_CHAIN}[measured]"
    args += [
        "-v", "info", "-filter_complex", graph,
        "-map", "[mixed]", "-c:a", "pcm_f32le", file_arg(out),
        "-map", "[measured]", "-f", "null", "-",
    ]  # fmt: skip
    return parse_ebur128(await run_tool(args, timeout_s, output="stderr"))
