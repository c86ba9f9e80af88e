"""A poster frame, a sprite sheet (one tile every N seconds, in a grid) and the WebVTT thumbnails
track that maps each time range to its tile (`sprite.jpg#xywh=x,y,w,h`). One ffmpeg run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from reelforge_core.finishing import ThumbnailsPlan
from reelforge_core.media import FFMPEG, file_arg, run_tool
from reelforge_postprocess.subtitles import vtt_timestamp

MAX_COLUMNS = 10
MAX_TILES = 200
JPEG_QUALITY = "3"  # ffmpeg's mjpeg qscale: 2 (best) .. 31


@dataclass(frozen=True)
class Tile:
    start_s: float
    end_s: float
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class SpriteLayout:
    interval_s: float
    columns: int
    rows: int
    tile_width: int
    tile_height: int
    tiles: tuple[Tile, ...]


@dataclass(frozen=True)
class ThumbnailFiles:
    thumbnail: Path | None
    sprite: Path | None
    layout: SpriteLayout | None


def sprite_layout(duration_s: float, width: int, height: int, plan: ThumbnailsPlan) -> SpriteLayout:
    """Tiles every interval (widened if the clip would need more than MAX_TILES), row by row."""
    interval = max(plan.sprite_interval_s, duration_s / MAX_TILES)
    count = max(1, math.ceil(duration_s / interval - 1e-6))
    columns = min(MAX_COLUMNS, count)
    rows = math.ceil(count / columns)
    tile_w = plan.sprite_tile_width
    tile_h = max(2, round(tile_w * height / width / 2) * 2)
    tiles = tuple(
        Tile(round(i * interval, 3), round(min((i + 1) * interval, duration_s), 3),
             (i % columns) * tile_w, (i // columns) * tile_h, tile_w, tile_h)
        for i in range(count)
    )  # fmt: skip
    return SpriteLayout(interval, columns, rows, tile_w, tile_h, tiles)


def thumbnails_vtt(layout: SpriteLayout, sprite_ref: str) -> str:
    """WebVTT thumbnails track; `sprite_ref` is how players reach the sprite (a URI or file name)."""
    blocks = [
        f"{vtt_timestamp(t.start_s)} --> {vtt_timestamp(t.end_s)}\n{sprite_ref}#xywh={t.x},{t.y},{t.width},{t.height}\n"
        for t in layout.tiles
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def poster_time(duration_s: float, plan: ThumbnailsPlan) -> float:
    at = duration_s / 3 if plan.thumbnail_at_s is None else plan.thumbnail_at_s
    return max(0.0, min(at, duration_s - 0.05))


async def make_thumbnails(
    video: Path, duration_s: float, width: int, height: int, plan: ThumbnailsPlan, workdir: Path, timeout_s: float
) -> ThumbnailFiles:
    if not (plan.thumbnail or plan.sprite):
        return ThumbnailFiles(None, None, None)
    args = [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y"]
    thumbnail = sprite = None
    layout = None
    if plan.thumbnail:
        args += ["-ss", f"{poster_time(duration_s, plan):.3f}", "-i", file_arg(video)]
    if plan.sprite:
        args += ["-i", file_arg(video)]
    if plan.thumbnail:
        thumbnail = workdir / "thumbnail.jpg"
        args += ["-map", "0:v:0", "-frames:v", "1", "-q:v", JPEG_QUALITY, "-update", "1", file_arg(thumbnail)]
    if plan.sprite:
        layout = sprite_layout(duration_s, width, height, plan)
        sprite = workdir / "sprite.jpg"
        index = 1 if plan.thumbnail else 0
        graph = (
            f"[{index}:v:0]fps=1/{layout.interval_s:.6f}:round=down,"
            f"scale={layout.tile_width}:{layout.tile_height},setsar=1,"
            f"tile={layout.columns}x{layout.rows}[sprite]"
        )
        args += ["-filter_complex", graph, "-map", "[sprite]", "-frames:v", "1", "-q:v", JPEG_QUALITY,
                 "-update", "1", file_arg(sprite)]  # fmt: skip
    await run_tool(args, timeout_s)
    return ThumbnailFiles(thumbnail, sprite, layout)
