from __future__ import annotations

from pydantic import Field, SecretStr

from reelforge_core.settings import ServiceSettings, service_config
from reelforge_gateway.provider_webhooks import ProviderWebhookConfig


class GatewaySettings(ServiceSettings):
    model_config = service_config("GATEWAY")

    service_name: str = "gateway"
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    # Multipart uploads (POST /v1/videos with input_reference) may be larger than a JSON body.
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    idempotency_ttl_hours: float = Field(default=24.0, ge=24.0)
    # How often an OpenAI SDK poller should come back (openai-poll-after-ms on GET /v1/videos/{id}).
    poll_after_ms: int = Field(default=1000, ge=50)
    # gRPC Watch and SSE (/v1/jobs/{id}/events) are woken by a NOTIFY per transition; a stream also re-reads
    # its job after this long without one (a notification lost while the listening connection reconnected).
    stream_fallback_seconds: float = Field(default=5.0, gt=0)
    # Requests per minute per API key (shared by every instance, see api/ratelimit.py); 0 = no limit.
    rate_limit_per_minute: int = Field(default=6000, ge=0)
    # Prompts (and narration) containing any of these words or phrases are refused with `prompt_blocked`.
    blocked_terms: list[str] = Field(default_factory=list)
    # Signed download URLs: the HMAC key (set the same value on every instance) and how long a URL works.
    download_signing_secret: SecretStr | None = None
    download_url_ttl_seconds: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    # Status reads keep this many unchanged jobs per process, each at most this long (0 = off); a change of the
    # job drops it at once (see job_reads.py), the time bounds only a notification lost some other way.
    status_cache_entries: int = Field(default=20_000, ge=0)
    status_cache_seconds: float = Field(default=30.0, ge=0, le=300)
    # A verified key is trusted this long without a database read; revocation takes at most this long.
    key_cache_seconds: float = Field(default=10.0, ge=0, le=300)
    # Webhooks: hosts (or host:port) exempt from the SSRF guard, e.g. a receiver on the same machine in tests;
    # retries back off exponentially from the base up to the cap; 14 attempts at the defaults span > 24 h.
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    # Webhook signing secrets are sealed at rest under these keys (JSON list, each >= 32 characters; the first
    # seals, all open: put a new key first to rotate). Empty: stored as given, with a warning at start.
    webhook_secret_keys: list[SecretStr] = Field(default_factory=list)
    # Render providers' webhooks (POST /v1/provider-webhooks/{provider}), JSON by our provider name, e.g.
    # {"replicate": {"scheme": "standard", "secret_env": "REPLICATE_WEBHOOK_SECRET"}}; see provider_webhooks.py.
    provider_webhooks: dict[str, ProviderWebhookConfig] = Field(default_factory=dict)
    webhook_backoff_base_seconds: float = Field(default=30.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    webhook_max_attempts: int = Field(default=14, ge=1)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    # Batches (POST /v1/batches): most lines (jobs before variants) and bytes per upload; templates per tenant.
    batch_max_lines: int = Field(default=10_000, ge=1)
    batch_max_jobs: int = Field(default=10_000, ge=1)
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_templates_per_tenant: int = Field(default=200, ge=0)
    # Defaults for tenants without limits of their own (set per tenant with the admin API); 0 = no limit.
    # Requests per minute per API key (above) and per tenant are token buckets shared by every instance.
    tenant_rate_limit_per_minute: int = Field(default=30000, ge=0)
    # Jobs accepted and not yet terminal, and jobs queued (not yet admitted), per tenant: 429 beyond.
    tenant_max_concurrent_jobs: int = Field(default=0, ge=0)
    tenant_max_backlog_jobs: int = Field(default=0, ge=0)
    # Processes serving the REST API on the one HTTP port (SO_REUSEPORT); extra ones only serve HTTP.
    http_workers: int = Field(default=1, ge=1, le=64)
    # The partner gRPC JobsService (reelforge.jobs.v1); port 0 picks a free port (logged).
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    # The billing service's gRPC target (GET /v1/usage, /v1/invoices, /v1/balance); unset: those answer 503.
    billing_target: str | None = None
    # The operator token billing's admin API wants (read a tenant's free grants for /v1/balance).
    billing_operator_token: SecretStr | None = None
    # Deliver billing's budget alerts (billing.v1.budget-alert) as `billing.budget_alert` webhooks.
    consume_budget_alerts: bool = True
