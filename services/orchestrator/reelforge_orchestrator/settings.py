from __future__ import annotations

from pydantic import Field

from reelforge_core.settings import ServiceSettings, service_config


class OrchestratorSettings(ServiceSettings):
    model_config = service_config("ORCHESTRATOR")

    service_name: str = "orchestrator"
    billing_target: str = "127.0.0.1:50051"
    billing_timeout_seconds: float = Field(default=5.0, gt=0)
    default_provider: str = "animatic"
    # Which render provider serves a model, as JSON ({"sora-2": "sora"}); unlisted models go to default_provider.
    model_providers: dict[str, str] = Field(default_factory=dict)
