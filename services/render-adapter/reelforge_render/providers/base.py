"""The provider interface and its error vocabulary.

Every provider, local or remote, is driven the same way by the tracker (tracker.py):
`submit` once (our render id is the idempotency key where the provider has one), then `status`
until the job is terminal (polled with jitter; a provider webhook, verified by the gateway and read with
`webhook_status`, counts as a poll answer that came early), then
`fetch_output` into a local file. `cancel` is best effort. A provider is one module in this
package exposing `create(config, context) -> Provider` (see registry.py); nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from reelforge.jobs.v1 import jobs_pb2

# Stable error codes the orchestrator and partners see.
INVALID_INPUT = "invalid_input"
CONTENT_POLICY = "content_policy"
RATE_LIMITED = "rate_limited"
PROVIDER_UNAVAILABLE = "provider_unavailable"
TIMEOUT = "timeout"
INTERNAL = "internal"
CANCELLED = "cancelled"  # the render was cancelled on request; never retried

RETRIABLE = frozenset({RATE_LIMITED, PROVIDER_UNAVAILABLE, TIMEOUT, INTERNAL})


class ProviderError(Exception):
    def __init__(self, code: str, message: str, retry_after: float | None = None,
                 maybe_applied: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds the provider asked us to wait (429 Retry-After)
        # The request may have reached the provider and taken effect although we got no answer
        # (read timeout, connection dropped mid-response): a non-idempotent submit must not be repeated.
        self.maybe_applied = maybe_applied

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE


@dataclass(frozen=True)
class ProviderJob:
    """What a provider call knows about one render: ours (render id, spec) and theirs (external id)."""

    render_id: str
    spec: jobs_pb2.JobSpec
    external_id: str = ""


State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Cost:
    micros: int = 0  # provider cost in millionths of `currency`
    currency: str = "USD"
    gpus: int = 0  # GPUs the job held (self-hosted pools report this)
    gpu_seconds: float = 0.0


@dataclass(frozen=True)
class JobStatus:
    state: State
    progress: int = 0  # 0-100
    queue_position: int | None = None
    error: ProviderError | None = None  # set when state == "failed"
    output_url: str = ""  # where the output can be fetched, when the provider hands out a URL
    cost: Cost = field(default_factory=Cost)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class Provider(Protocol):
    name: str
    # Seconds between status polls (jittered by the tracker); local providers poll fast.
    poll_interval: float
    # Whether repeating `submit` for the same render cannot start a second job (the provider dedupes on
    # our Idempotency-Key, or the render is local). When False the tracker keeps a submission record and
    # never repeats a submit whose outcome it does not know (tracker.py).
    idempotent_submit: bool

    async def submit(self, job: ProviderJob) -> str:
        """Starts the render at the provider and returns the provider's job id."""

    async def status(self, job: ProviderJob) -> JobStatus:
        """The job's state at the provider (one request; never waits for completion)."""

    async def cancel(self, job: ProviderJob) -> None:
        """Asks the provider to stop the job; best effort, idempotent."""

    async def fetch_output(self, job: ProviderJob, status: JobStatus, out_path: Path) -> None:
        """Writes the finished video to `out_path` (size-limited, SSRF-guarded when it is a URL)."""

    def webhook_subject(self, body: Any) -> str | None:
        """The provider's job id a verified webhook body is about (None: not a delivery we understand)."""

    def webhook_status(self, job: ProviderJob, body: Any) -> JobStatus | None:
        """The job's state as the webhook body tells it, read by the same rules as a `status` answer; None
        when the body does not carry the state (the tracker then polls at once)."""

    async def close(self) -> None:
        """Releases connections."""
