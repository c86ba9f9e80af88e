"""Job-level Prometheus metrics with the platform's label vocabulary (tenant, model, pool,
provider, status, code), every label value bounded.

Recorded where the orchestrator moves a job (`store.transition`) and takes a render result, so
each is counted by the process that made the change (like `reelforge_job_transitions_total`, a
transaction rolled back after the count still counts).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter, Histogram

from reelforge_core.metrics import OTHER, BoundedLabel
from reelforge_orchestrator.states import JobState

__all__ = ["OTHER", "BoundedLabel", "on_render_result", "on_transition"]

if TYPE_CHECKING:
    from reelforge_orchestrator.store import Job

tenant_label = BoundedLabel(200)
model_label = BoundedLabel(50)
pool_label = BoundedLabel(100)
code_label = BoundedLabel(50)

FINISHED = Counter("reelforge_jobs_finished_total", "Jobs that reached an end, by tenant, model and status",
                   ["tenant", "model", "status"])
FAILURES = Counter("reelforge_job_failures_total", "Failed or expired jobs by model and error code",
                   ["model", "code"])
CHARGED = Counter("reelforge_job_charged_micros_total", "What completed jobs were charged (micro-units of the "
                  "currency), by tenant and model", ["tenant", "model"])
OUTPUT_SECONDS = Counter("reelforge_job_output_seconds_total", "Seconds of finished video delivered, by tenant "
                         "and model", ["tenant", "model"])
TIME_TO_FIRST_FRAME = Histogram(
    "reelforge_job_time_to_first_frame_seconds", "From the job's arrival to its first rendered output, by model",
    ["model"], buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
COMPLETION_SECONDS = Histogram(
    "reelforge_job_completion_seconds", "From the job's arrival to completed, by model",
    ["model"], buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
RENDER_RESULTS = Counter("reelforge_render_results_total", "Render results by pool, provider and status "
                         "(ok, error): the provider error budget", ["pool", "provider", "status"])


def on_transition(before: Job, after: Job, target: JobState, row: asyncpg.Record) -> None:
    """`before`/`after` are the job as read and as moved; `row` the updated row (with changed_at)."""
    model = model_label(after.spec.model)
    changed_at: datetime = row["changed_at"]
    since_arrival = (changed_at - after.created_at).total_seconds() if after.created_at else None
    if target is JobState.POSTPROCESSING and before.render_output_uri is None and since_arrival is not None:
        TIME_TO_FIRST_FRAME.labels(model).observe(max(0.0, since_arrival))
    if not target.terminal:
        return
    tenant = tenant_label(after.tenant_id)
    FINISHED.labels(tenant, model, target.value).inc()
    if target in (JobState.FAILED, JobState.EXPIRED):
        FAILURES.labels(model, code_label(row["error_code"] or "unknown")).inc()
    if target is JobState.COMPLETED:
        CHARGED.labels(tenant, model).inc(row["charged_micros"] or 0)
        OUTPUT_SECONDS.labels(tenant, model).inc(row["output_seconds"] or 0.0)
        if since_arrival is not None:
            COMPLETION_SECONDS.labels(model).observe(max(0.0, since_arrival))


def on_render_result(pool_id: str, provider: str, ok: bool) -> None:
    RENDER_RESULTS.labels(pool_label(pool_id), pool_label(provider), "ok" if ok else "error").inc()
