from __future__ import annotations

from pydantic import Field

from reelforge_core.settings import ServiceSettings, service_config


class BillingSettings(ServiceSettings):
    model_config = service_config("BILLING")

    service_name: str = "billing"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    currency: str = "USD"
