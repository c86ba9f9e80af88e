"""Prometheus metrics of the render adapter. `provider` is a configured provider name (bounded by
configuration) and `code` one of the stable error codes."""

from __future__ import annotations

from prometheus_client import Counter

RENDERS_FINISHED = Counter(
    "reelforge_renders_finished_total", "Renders that reached a result, by provider, status (ok, failed) and code",
    ["provider", "status", "code"],
)
RENDER_OUTPUT_SECONDS = Counter(
    "reelforge_render_output_seconds_total", "Seconds of video providers delivered", ["provider"],
)
RENDER_GPU_SECONDS = Counter(
    "reelforge_render_gpu_seconds_total", "GPU-seconds self-hosted pools reported for finished renders", ["provider"],
)
PROVIDER_COST_MICROS = Counter(
    "reelforge_render_provider_cost_micros_total", "What providers charged for finished renders", ["provider"],
)


def record(provider: str, ok: bool, code: str, output_seconds: float, gpu_seconds: float, cost_micros: int) -> None:
    RENDERS_FINISHED.labels(provider, "ok" if ok else "failed", code or "none").inc()
    if ok:
        RENDER_OUTPUT_SECONDS.labels(provider).inc(max(0.0, output_seconds))
        RENDER_GPU_SECONDS.labels(provider).inc(max(0.0, gpu_seconds))
        PROVIDER_COST_MICROS.labels(provider).inc(max(0, cost_micros))
