"""Prometheus metrics of the render adapter. `provider` is a configured provider name (bounded by
configuration), `model` the job's model and `code` one of the stable error codes, each past a limit
of distinct values counted as "other"."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from reelforge_core.metrics import BoundedLabel

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


RENDER_SECONDS = Histogram(
    "reelforge_render_seconds",
    "From the render request's acceptance to its result (submit, provider queue and render, download, checks), "
    "by provider, model and status",
    ["provider", "model", "status"],
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)


provider_label = BoundedLabel(50)
model_label = BoundedLabel(50)
code_label = BoundedLabel(50)


def record(provider: str, ok: bool, code: str, output_seconds: float, gpu_seconds: float, cost_micros: int,
           model: str = "", elapsed_seconds: float | None = None) -> None:
    provider = provider_label(provider)
    status = "ok" if ok else "failed"
    RENDERS_FINISHED.labels(provider, status, code_label(code)).inc()
    if elapsed_seconds is not None:
        RENDER_SECONDS.labels(provider, model_label(model), status).observe(max(0.0, elapsed_seconds))
    if ok:
        RENDER_OUTPUT_SECONDS.labels(provider).inc(max(0.0, output_seconds))
        RENDER_GPU_SECONDS.labels(provider).inc(max(0.0, gpu_seconds))
        PROVIDER_COST_MICROS.labels(provider).inc(max(0, cost_micros))
