"""`animatic`: the offline provider. Renders a storyboard video locally with FFmpeg."""

from __future__ import annotations

from pathlib import Path

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core.media import MediaError
from reelforge_render.animatic import AnimaticSpec, RenderRejected, render_animatic, validate
from reelforge_render.providers.base import INTERNAL, INVALID_INPUT, TIMEOUT, ProviderError


class AnimaticProvider:
    name = "animatic"

    def __init__(self, max_pixels: int, timeout_seconds: float) -> None:
        self._max_pixels = max_pixels
        self._timeout = timeout_seconds

    async def render(self, render_id: str, spec: jobs_pb2.JobSpec, out_path: Path) -> None:
        animatic = AnimaticSpec(
            prompt=spec.prompt, seconds=spec.seconds, width=spec.width, height=spec.height, seed=spec.seed
        )
        if spec.width * spec.height > self._max_pixels:
            raise ProviderError(
                INVALID_INPUT,
                f"animatic renders at most {self._max_pixels} pixels per frame; {spec.width}x{spec.height} is larger",
            )
        try:
            validate(animatic)
            await render_animatic(animatic, out_path, timeout_s=self._timeout)
        except RenderRejected as exc:
            raise ProviderError(INVALID_INPUT, exc.message) from exc
        except MediaError as exc:
            code = TIMEOUT if exc.code == "media_tool_timeout" else INTERNAL
            raise ProviderError(code, exc.message) from exc
