from __future__ import annotations

from pydantic import Field, SecretStr

from reelforge_core.settings import ServiceSettings, service_config


class OrchestratorSettings(ServiceSettings):
    model_config = service_config("ORCHESTRATOR")

    service_name: str = "orchestrator"
    billing_target: str = "127.0.0.1:50051"
    billing_timeout_seconds: float = Field(default=5.0, gt=0)
    default_provider: str = "animatic"
    leader_poll_seconds: float = Field(default=0.5, gt=0)
    tick_seconds: float = Field(default=0.25, gt=0)
    config_reload_seconds: float = Field(default=5.0, gt=0)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)  # admin API; 0 picks a free port (logged)
    # Bearer token of the ops console (/console) and the admin gRPC API; unset disables both.
    operator_token: SecretStr | None = None
