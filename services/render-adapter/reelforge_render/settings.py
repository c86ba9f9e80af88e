from __future__ import annotations

from pydantic import Field

from reelforge_core.settings import ServiceSettings, service_config
from reelforge_render.providers.config import ProviderConfig


class RenderSettings(ServiceSettings):
    model_config = service_config("RENDER")

    service_name: str = "render-adapter"
    render_timeout_seconds: float = Field(default=300.0, gt=0)
    animatic_max_pixels: int = Field(default=1920 * 1080, gt=0)
    animatic_max_parallel: int = Field(default=2, ge=1)
    # Remote providers by name (the RenderRequested.provider value), as JSON; see providers/config.py.
    # Example: {"sora": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"}}
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    tracker_workers: int = Field(default=128, ge=1, le=4096)  # provider calls in progress at once, at most
    poll_jitter: float = Field(default=0.2, ge=0, lt=1)
