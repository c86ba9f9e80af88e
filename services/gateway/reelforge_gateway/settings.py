from __future__ import annotations

from pydantic import Field

from reelforge_core.settings import ServiceSettings, service_config


class GatewaySettings(ServiceSettings):
    model_config = service_config("GATEWAY")

    service_name: str = "gateway"
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
