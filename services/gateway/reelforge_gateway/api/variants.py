"""A finished job's downloadable files: the video and its preview assets (poster frame, sprite sheet)."""

from __future__ import annotations

import asyncio
from typing import Literal

import asyncpg
from fastapi.responses import FileResponse

from reelforge_core.content import ContentNotFound, ContentStore, ContentStoreError
from reelforge_gateway.api.problems import Problem

Variant = Literal["video", "thumbnail", "spritesheet"]
VARIANTS: tuple[Variant, ...] = ("video", "thumbnail", "spritesheet")
# variant -> (jobs column, media type, file name suffix)
_FILES: dict[str, tuple[str, str, str]] = {
    "video": ("output_uri", "video/mp4", ".mp4"),
    "thumbnail": ("thumbnail_uri", "image/jpeg", ".jpg"),
    "spritesheet": ("sprite_uri", "image/jpeg", "-sprite.jpg"),
}


async def file_response(content: ContentStore, job: asyncpg.Record, variant: str, gone_status: int) -> FileResponse:
    """The variant's file; 404 `variant_not_available` if the finish did not make it (the job's
    postprocess options did not ask for it), `gone_status` if the store no longer has it."""
    column, media_type, suffix = _FILES[variant]
    uri = job[column]
    if not uri:
        raise Problem(404, "variant_not_available", f"No {variant} for this job",
                      f"The job was finished without a {variant}", param="variant")
    try:
        path = await asyncio.to_thread(content.path_of, uri)  # the S3 driver may download it
    except ContentNotFound:
        raise Problem(gone_status, "content_gone", f"The {variant} is no longer stored") from None
    except ContentStoreError:
        raise Problem(503, "content_unavailable", "The content store is not reachable; try again") from None
    return FileResponse(path, media_type=media_type, filename=f"{job['job_id']}{suffix}")
