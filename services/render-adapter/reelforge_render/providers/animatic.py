"""`animatic`: the offline provider. Renders a storyboard video locally with FFmpeg.

It runs behind the same submit/status/fetch interface as remote providers: `submit` starts the
render as a local task (at most `max_parallel` at once) and the tracker polls it. After a restart
the task is gone; `status` then simply renders again (deterministic for the seed, nothing is paid).

Job options ride in the JobSpec's metadata: `animatic.shots` (a JSON list of strings, one scene each,
instead of scenes derived from the prompt's sentences), `animatic.fps` (frames per second, default 24) and
`animatic.transition` (one xfade transition for every cut, e.g. `fade`; default a seeded choice per cut).
The job's `input_reference_uri` (an image, or a video whose first frame is used) is panned and zoomed
behind the text (Ken Burns); it is read from the content store and probed first, so a file that is not a
picture, or one larger than MAX_REFERENCE_SIDE, is `invalid_input` rather than an FFmpeg failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core.content import ContentNotFound, ContentReader, StoreFull
from reelforge_core.media import FFMPEG, MediaError, file_arg, probe, run_tool
from reelforge_render.animatic import AnimaticSpec, RenderRejected, render_animatic, validate
from reelforge_render.providers.base import INTERNAL, INVALID_INPUT, TIMEOUT, JobStatus, ProviderError, ProviderJob

# Test hook (QC): a prompt containing this directive, or JobSpec metadata animatic.black=true,
# renders an all-black clip of the requested size and length, which postprocess QC rejects.
BLACK_DIRECTIVE = "[animatic:black]"


SHOTS_OPTION, FPS_OPTION, TRANSITION_OPTION = "animatic.shots", "animatic.fps", "animatic.transition"
MAX_REFERENCE_SIDE = 8192  # a larger picture is refused before FFmpeg decodes it


def animatic_spec(spec: jobs_pb2.JobSpec) -> AnimaticSpec:
    """The render a job asks for, with its options; RenderRejected names a malformed option."""
    shots: list[str] | None = None
    if SHOTS_OPTION in spec.metadata:
        try:
            parsed = json.loads(spec.metadata[SHOTS_OPTION])
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(shot, str) for shot in parsed):
            raise RenderRejected(f"{SHOTS_OPTION} must be a JSON list of strings")
        shots = parsed
    fps = 24
    if FPS_OPTION in spec.metadata:
        try:
            fps = int(spec.metadata[FPS_OPTION])
        except ValueError:
            raise RenderRejected(f"{FPS_OPTION} must be a whole number of frames per second") from None
    return AnimaticSpec(prompt=spec.prompt, seconds=spec.seconds, width=spec.width, height=spec.height,
                        fps=fps, seed=spec.seed, shots=shots, transition=spec.metadata.get(TRANSITION_OPTION))


async def reference_path(content: ContentReader | None, uri: str, timeout_s: float) -> Path:
    """The job's input reference as a local file that FFmpeg can read as a picture; RenderRejected if not."""
    if content is None:
        raise RenderRejected("this animatic renderer has no content store to read input references from")
    try:
        path = await asyncio.to_thread(content.path_of, uri)
    except ContentNotFound:
        raise RenderRejected("the input reference does not exist in the content store") from None
    try:
        video = (await probe(path, timeout_s)).video
    except MediaError:
        video = None
    if video is None or not video.width or not video.height:
        raise RenderRejected("the input reference is not a readable image or video")
    if max(video.width, video.height) > MAX_REFERENCE_SIDE:
        raise RenderRejected(f"the input reference is {video.width}x{video.height}; "
                             f"at most {MAX_REFERENCE_SIDE} pixels a side are accepted")
    return path


def wants_black(spec: jobs_pb2.JobSpec) -> bool:
    return BLACK_DIRECTIVE in spec.prompt or spec.metadata.get("animatic.black") == "true"


async def render_black(spec: jobs_pb2.JobSpec, out_path: Path, timeout_s: float) -> None:
    source = f"color=c=black:s={spec.width}x{spec.height}:r=24:d={spec.seconds:g}"
    await run_tool([FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4", file_arg(out_path)], timeout_s)


class AnimaticProvider:
    name = "animatic"
    poll_interval = 0.1
    idempotent_submit = True  # a local render: starting it again only renders again

    def __init__(self, max_pixels: int, timeout_seconds: float, scratch: Path, max_parallel: int = 2,
                 content: ContentReader | None = None) -> None:
        self._content = content
        self._max_pixels = max_pixels
        self._timeout = timeout_seconds
        self._scratch = scratch
        self._slots = asyncio.Semaphore(max_parallel)
        self._renders: dict[str, asyncio.Task[Path]] = {}

    async def submit(self, job: ProviderJob) -> str:
        self._start(job)
        return job.render_id

    def _start(self, job: ProviderJob) -> asyncio.Task[Path]:
        task = self._renders.get(job.render_id)
        if task is None:
            task = asyncio.create_task(self._render(job), name=f"animatic:{job.render_id}")
            self._renders[job.render_id] = task
        return task

    async def status(self, job: ProviderJob) -> JobStatus:
        task = self._start(job)
        if not task.done():
            return JobStatus("running", 0)
        if task.cancelled():
            return JobStatus("cancelled")
        error = task.exception()
        if error is None:
            return JobStatus("succeeded", 100)
        self._renders.pop(job.render_id, None)
        if isinstance(error, StoreFull):
            raise error  # the tracker retries the step (a new render) with backoff until space returns
        if isinstance(error, ProviderError):
            return JobStatus("failed", error=error)
        return JobStatus("failed", error=ProviderError(INTERNAL, f"animatic: {type(error).__name__}"))

    async def cancel(self, job: ProviderJob) -> None:
        task = self._renders.pop(job.render_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def fetch_output(self, job: ProviderJob, status: JobStatus, out_path: Path) -> None:
        task = self._renders.pop(job.render_id)
        shutil.move(task.result(), out_path)

    def webhook_subject(self, body: Any) -> str | None:
        return None  # local: no webhooks

    def webhook_status(self, job: ProviderJob, body: Any) -> JobStatus | None:
        return None

    async def close(self) -> None:
        for task in self._renders.values():
            task.cancel()

    async def _render(self, job: ProviderJob) -> Path:
        spec = job.spec
        if spec.width * spec.height > self._max_pixels:
            raise ProviderError(
                INVALID_INPUT,
                f"animatic renders at most {self._max_pixels} pixels per frame; {spec.width}x{spec.height} is larger",
            )
        out = self._scratch / f"animatic-{hashlib.sha256(job.render_id.encode()).hexdigest()[:24]}.mp4"
        try:
            animatic = animatic_spec(spec)
            validate(animatic)
            if spec.input_reference_uri:
                reference = await reference_path(self._content, spec.input_reference_uri, self._timeout)
                animatic = replace(animatic, reference=reference)
            async with self._slots:
                if wants_black(spec):
                    await render_black(spec, out, self._timeout)
                else:
                    await render_animatic(animatic, out, timeout_s=self._timeout)
        except RenderRejected as exc:
            raise ProviderError(INVALID_INPUT, exc.message) from exc
        except MediaError as exc:
            code = TIMEOUT if exc.code == "media_tool_timeout" else INTERNAL
            raise ProviderError(code, exc.message) from exc
        return out
