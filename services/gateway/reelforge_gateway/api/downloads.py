"""/v1/downloads: the target of signed download URLs. No API key; the signature is the credential."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from reelforge_core.content import ContentNotFound, ContentStore, ContentStoreError
from reelforge_gateway import store
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.signing import SignatureExpired, SignatureInvalid, UrlSigner

router = APIRouter(prefix="/v1/downloads", tags=["downloads"])
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


@router.get("/{job_id}", name="signed_download", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}, 403: {**_PROBLEM, "description": "Bad or expired link"},
                       404: {**_PROBLEM, "description": "Gone"}, 422: {**_PROBLEM, "description": "Bad query"}})
async def signed_download(
    job_id: str, request: Request,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(min_length=1, max_length=128)],
    variant: Annotated[Literal["video"], Query()] = "video",
) -> FileResponse:
    signer: UrlSigner = request.app.state.signer
    try:
        signer.verify(job_id, variant, expires, signature)
    except SignatureInvalid:
        raise Problem(403, "invalid_signature", "The download link is not valid") from None
    except SignatureExpired:
        raise Problem(403, "download_url_expired", "The download link has expired",
                      "Ask for a new one at /v1/jobs/{id}/download_url") from None
    row = await store.get_job_unscoped(request.app.state.pool, job_id)
    content: ContentStore = request.app.state.content
    try:
        if row is None or not row["output_uri"]:
            raise ContentNotFound(job_id)
        path = await asyncio.to_thread(content.path_of, row["output_uri"])  # the S3 driver may download it
    except ContentNotFound:
        raise Problem(404, "content_gone", "The video is no longer available") from None
    except ContentStoreError:
        raise Problem(503, "content_unavailable", "The content store is not reachable; try again") from None
    return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4")
