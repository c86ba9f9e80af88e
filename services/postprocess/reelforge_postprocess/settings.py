from __future__ import annotations

from typing import Literal

from pydantic import Field

from reelforge_core.settings import ServiceSettings, service_config


class PostprocessSettings(ServiceSettings):
    model_config = service_config("POSTPROCESS")

    service_name: str = "postprocess"
    finish_timeout_seconds: float = Field(default=300.0, gt=0)
    # Re-encodes (burn-in, watermark, renditions): x264 speed/size trade-off and quality.
    x264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "superfast"
    x264_crf: int = Field(default=21, ge=0, le=51)
