"""Pictures: renditions (pad or crop to a size), burned-in subtitles and the free-tier watermark.

All outputs that need new pictures come from one ffmpeg run (the master is decoded once and split);
sound and soft subtitle tracks are stream-copied from the master. An output that needs no new
pictures is not encoded at all: it is the master itself (stream copy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reelforge_core.finishing import WatermarkPlan
from reelforge_core.media import FFMPEG, file_arg, run_tool
from reelforge_postprocess.subtitles import is_wide

WATERMARK_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
WATERMARK_CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")  # drawtext does no font fallback
WATERMARK_SIZE = 0.045  # of the shorter side
WATERMARK_MARGIN = 0.03  # of the shorter side, from the top and right edges


@dataclass(frozen=True)
class Picture:
    """One video output to encode."""

    name: str
    path: Path
    width: int
    height: int
    fit: str | None  # "pad" | "crop" | None (the master's own frame)
    burn_in: Path | None  # ASS script drawn at this size
    watermark_text: Path | None  # file with the watermark text


def escape_filter_value(value: str) -> str:
    """Escape an option value for an FFmpeg filtergraph (option level, then graph level)."""
    option_level = re.sub(r"([\\':])", r"\\\1", value)
    return re.sub(r"([\\'\[\],;])", r"\\\1", option_level)


def fit_filter(width: int, height: int, fit: str | None) -> list[str]:
    if fit is None:
        return []
    if fit == "crop":
        return [f"scale={width}:{height}:force_original_aspect_ratio=increase", f"crop={width}:{height}"]
    return [
        f"scale={width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2",
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:black",
    ]


def watermark_filter(textfile: Path, width: int, height: int, plan: WatermarkPlan) -> str:
    size = max(10, round(min(width, height) * WATERMARK_SIZE))
    margin = max(4, round(min(width, height) * WATERMARK_MARGIN))
    font = WATERMARK_CJK_FONT if any(is_wide(ch) for ch in plan.text) else WATERMARK_FONT
    options = {
        "fontfile": escape_filter_value(str(font)),
        "textfile": escape_filter_value(str(textfile)),
        "expansion": "none",
        "fontsize": str(size),
        "fontcolor": f"white@{plan.opacity:g}",
        "borderw": str(max(1, size // 12)),
        "bordercolor": f"black@{plan.opacity * 0.6:g}",
        "x": f"w-text_w-{margin}",
        "y": str(margin),
    }
    return "drawtext=" + ":".join(f"{k}={v}" for k, v in options.items())


def picture_chain(picture: Picture, watermark: WatermarkPlan | None) -> list[str]:
    steps = [*fit_filter(picture.width, picture.height, picture.fit), "setsar=1"]
    if picture.burn_in is not None:
        steps.append(f"ass=filename={escape_filter_value(str(picture.burn_in))}")
    if watermark is not None and picture.watermark_text is not None:
        steps.append(watermark_filter(picture.watermark_text, picture.width, picture.height, watermark))
    return steps


def encode_args(
    master: Path, pictures: list[Picture], watermark: WatermarkPlan | None, preset: str, crf: int
) -> list[str]:
    split = f"[0:v:0]split={len(pictures)}" + "".join(f"[in{i}]" for i in range(len(pictures)))
    chains = [split] if len(pictures) > 1 else []
    sources = [f"[in{i}]" for i in range(len(pictures))] if len(pictures) > 1 else ["[0:v:0]"]
    for i, (picture, source) in enumerate(zip(pictures, sources, strict=True)):
        chains.append(f"{source}{','.join(picture_chain(picture, watermark))}[v{i}]")
    args = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", file_arg(master),
            "-filter_complex", ";".join(chains)]  # fmt: skip
    for i, picture in enumerate(pictures):
        args += [
            "-map", f"[v{i}]", "-map", "0:a?", "-map", "0:s?",
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-c:a", "copy", "-c:s", "copy", "-movflags", "+faststart", "-f", "mp4", file_arg(picture.path),
        ]  # fmt: skip
    return args


async def encode_pictures(
    master: Path, pictures: list[Picture], watermark: WatermarkPlan | None, preset: str, crf: int, timeout_s: float
) -> None:
    if pictures:
        await run_tool(encode_args(master, pictures, watermark, preset, crf), timeout_s)
