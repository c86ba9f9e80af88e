"""The provider interface and its error vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from reelforge.jobs.v1 import jobs_pb2

# Stable error codes the orchestrator and partners see.
INVALID_INPUT = "invalid_input"
CONTENT_POLICY = "content_policy"
RATE_LIMITED = "rate_limited"
PROVIDER_UNAVAILABLE = "provider_unavailable"
TIMEOUT = "timeout"
INTERNAL = "internal"

RETRIABLE = frozenset({RATE_LIMITED, PROVIDER_UNAVAILABLE, TIMEOUT, INTERNAL})


class ProviderError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE


class Provider(Protocol):
    name: str

    async def render(self, render_id: str, spec: jobs_pb2.JobSpec, out_path: Path) -> None:
        """Renders `spec` into an MP4 at `out_path`, or raises ProviderError."""
