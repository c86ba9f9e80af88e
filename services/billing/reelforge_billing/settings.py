from __future__ import annotations

from pydantic import Field, SecretStr

from reelforge_core.settings import ServiceSettings, service_config


class BillingSettings(ServiceSettings):
    model_config = service_config("BILLING")

    service_name: str = "billing"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    currency: str = "USD"
    # Bearer token that BillingAdminService and SpendService require (the platform's operator token);
    # unset: they refuse every call.
    operator_token: SecretStr | None = None
    # Consume usage.v1.recorded into usage rows (metering for reports; never charges).
    consume_usage: bool = True
    # Publish the outbox (budget alerts on billing.v1.budget-alert); off only where no Kafka runs (benches).
    publish_events: bool = True
    # How often the reconciliation job compares usage with the ledger (0 = never; the RPC still works).
    reconcile_interval_seconds: float = Field(default=3600.0, ge=0)
    # Concurrent Reserve/Settle/Release calls share one statement and one commit (group_commit.py).
    group_commit: bool = True
    # Batches running at once (each on its own connection); more overlap the WAL flush of one with the next.
    group_commit_in_flight: int = Field(default=2, ge=1, le=16)
    # How often the ledger totals metrics fold in new ledger transactions (0 = never).
    ledger_totals_seconds: float = Field(default=5.0, ge=0)
    # A settlement this young may still be waiting for its usage event.
    reconcile_grace_seconds: float = Field(default=300.0, ge=0)
