from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from reelforge_core.settings import ServiceSettings, service_config
from reelforge_orchestrator.scheduling.circuit import MAX_OPEN_SECONDS, MAX_PROBES, MAX_WINDOW, CircuitPolicy
from reelforge_orchestrator.scheduling.fair_queue import SchedulingPolicy


class OrchestratorSettings(ServiceSettings):
    model_config = service_config("ORCHESTRATOR")

    service_name: str = "orchestrator"
    billing_target: str = "127.0.0.1:50051"
    billing_timeout_seconds: float = Field(default=5.0, gt=0)
    default_provider: str = "animatic"
    leader_poll_seconds: float = Field(default=0.5, gt=0)
    tick_seconds: float = Field(default=0.25, gt=0)
    config_reload_seconds: float = Field(default=5.0, gt=0)
    # Every pool's circuit breaker: it opens when at least `circuit_error_rate` of the last
    # `circuit_window` renders (and `circuit_min_calls` or more) failed, stays open `circuit_open_seconds`,
    # then lets `circuit_half_open_probes` jobs through; all must succeed to close it. These are the
    # defaults: a pool's own policy (admin SetPoolBreaker, stored with the pool) overrides any of them.
    circuit_window: int = Field(default=20, ge=1, le=MAX_WINDOW)
    circuit_min_calls: int = Field(default=5, ge=1, le=MAX_WINDOW)
    circuit_error_rate: float = Field(default=0.5, gt=0, le=1)
    circuit_open_seconds: float = Field(default=30.0, gt=0, le=MAX_OPEN_SECONDS)
    circuit_half_open_probes: int = Field(default=2, ge=1, le=MAX_PROBES)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)  # admin API; 0 picks a free port (logged)
    # Bearer token of the ops console (/console) and the admin gRPC API; unset disables both.
    operator_token: SecretStr | None = None

    @model_validator(mode="after")
    def _breaker_can_open(self) -> Self:
        if self.circuit_min_calls > self.circuit_window:
            raise ValueError(f"circuit_min_calls ({self.circuit_min_calls}) exceeds circuit_window"
                             f" ({self.circuit_window}): the breaker could never open")
        return self

    def scheduling_policy(self) -> SchedulingPolicy:
        return SchedulingPolicy(circuit=CircuitPolicy(
            window=self.circuit_window, min_calls=self.circuit_min_calls, error_rate_to_open=self.circuit_error_rate,
            open_seconds=self.circuit_open_seconds, half_open_probes=self.circuit_half_open_probes))
