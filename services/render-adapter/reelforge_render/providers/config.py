"""Per-provider configuration: where it is, how to authenticate, how to poll it, what it costs.

Configured as JSON in `REELFORGE_RENDER_PROVIDERS`, a map from our provider name (the value of
RenderRequested.provider) to a ProviderConfig. `kind` names the module in this package that speaks
the provider's API, so one module can serve several configured providers (e.g. `openai` for OpenAI,
Azure OpenAI, a compatible gateway and our self-hosted GPU pool).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class MissingCredentials(Exception):
    pass


class ProviderConfig(BaseModel):
    kind: str
    base_url: str = ""
    # The API key comes from an environment variable or a file (a mounted secret); never from here.
    api_key_env: str | None = None
    api_key_file: Path | None = None
    model: str = ""  # the provider's model id when the job's model has no entry in `models`
    models: dict[str, str] = Field(default_factory=dict)  # our model name -> the provider's model id
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=1800.0, gt=0)  # a render still running after this is abandoned
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    price_micros_per_second: int = Field(default=0, ge=0)  # what one output second costs us there
    max_output_bytes: int = Field(default=1024**3, gt=0)
    # Hosts or networks output URLs may point to although they are not public (tests: the fake's loopback).
    allow_output_hosts: list[str] = Field(default_factory=list)
    # Our public webhook URL for this provider, when it can call back: the gateway's
    # /v1/provider-webhooks/{name}, which verifies the delivery (the gateway's PROVIDER_WEBHOOKS setting).
    webhook_url: str = ""
    options: dict[str, str] = Field(default_factory=dict)  # provider-specific knobs, documented per module

    def api_key(self) -> SecretStr:
        if self.api_key_file is not None:
            return SecretStr(self.api_key_file.read_text().strip())
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if value:
                return SecretStr(value)
            raise MissingCredentials(f"environment variable {self.api_key_env} is not set")
        raise MissingCredentials("neither api_key_env nor api_key_file is configured")

    def provider_model(self, our_model: str) -> str:
        return self.models.get(our_model) or self.model or our_model
