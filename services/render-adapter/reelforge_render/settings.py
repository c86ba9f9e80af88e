from __future__ import annotations

from pydantic import Field

from reelforge_core.settings import ServiceSettings, service_config


class RenderSettings(ServiceSettings):
    model_config = service_config("RENDER")

    service_name: str = "render-adapter"
    render_timeout_seconds: float = Field(default=300.0, gt=0)
    animatic_max_pixels: int = Field(default=1920 * 1080, gt=0)
