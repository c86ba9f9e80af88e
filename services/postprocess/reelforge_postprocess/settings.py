from __future__ import annotations

from pydantic import Field

from reelforge_core.settings import ServiceSettings, service_config


class PostprocessSettings(ServiceSettings):
    model_config = service_config("POSTPROCESS")

    service_name: str = "postprocess"
    finish_timeout_seconds: float = Field(default=300.0, gt=0)
