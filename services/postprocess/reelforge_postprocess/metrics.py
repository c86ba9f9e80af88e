"""Prometheus metrics of postprocess; `code` is one of the finishing error codes (a fixed set)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

FINISH_SECONDS = Histogram(
    "reelforge_postprocess_seconds", "Time to finish one rendered video (narration, mux, renditions, QC)",
    ["status"], buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)
FINISHES = Counter("reelforge_postprocess_finished_total", "Finished videos by status and code", ["status", "code"])


def record(ok: bool, code: str, seconds: float) -> None:
    status = "ok" if ok else "failed"
    FINISH_SECONDS.labels(status).observe(seconds)
    FINISHES.labels(status, code or "none").inc()
