"""Writes the Grafana dashboards in dashboards/ from the panel lists below (run after editing:
`.venv/bin/python deploy/grafana/generate.py`; a test fails if the JSON is out of date)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

Panel = tuple[str, str, str]  # title, PromQL, unit

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "overview": ("Reelforge — overview", [
        ("Jobs completed /s", "reelforge:job_completions:rate5m", "ops"),
        ("Jobs failed or expired /s", "reelforge:job_failures:rate5m", "ops"),
        ("Job success ratio (30 min, SLO 95%)", "reelforge:job_success_ratio:rate30m", "percentunit"),
        ("Job transitions /s by state", "sum by (state) (rate(reelforge_job_transitions_total[5m]))", "ops"),
        ("Services up", 'sum(up{job="reelforge"})', "none"),
        ("Dead-lettered records (10 min)", "reelforge:dead_letters:increase10m", "none"),
    ]),
    "pipeline": ("Reelforge — event pipeline", [
        ("Consumer lag by group", "reelforge:consumer_lag:sum", "none"),
        ("Handler p95 by group", "reelforge:event_handler_seconds:p95", "s"),
        ("Records handled /s by outcome",
         "sum by (group, outcome) (rate(reelforge_events_consumed_total[5m]))", "ops"),
        ("Outbox backlog by instance", "max by (instance) (reelforge_outbox_backlog)", "none"),
        ("Outbox published /s by topic", "sum by (topic) (rate(reelforge_outbox_published_total[5m]))", "ops"),
        ("Outbox publish failures /s", "sum(rate(reelforge_outbox_publish_failures_total[5m]))", "ops"),
    ]),
    "tenants": ("Reelforge — tenants", [
        ("Jobs finished /s by tenant and status",
         "sum by (tenant, status) (rate(reelforge_jobs_finished_total[5m]))", "ops"),
        ("Job success ratio by tenant (1 h, SLO 95%)", "reelforge:job_success_ratio_by_tenant:rate1h", "percentunit"),
        ("Jobs waiting by tier", "sum by (tier) (reelforge_scheduler_queue_depth)", "none"),
        ("p95 queue wait by tier (SLO 300 s for paid tiers)", "reelforge:queue_wait_seconds:p95", "s"),
        ("Oldest wait by tier", "max by (tier) (reelforge_scheduler_oldest_wait_seconds)", "s"),
        ("Video seconds delivered /s by tenant",
         "sum by (tenant) (rate(reelforge_job_output_seconds_total[5m]))", "none"),
        ("Failures /s by code", "sum by (code) (rate(reelforge_job_failures_total[5m]))", "ops"),
        ("p95 time to first frame by model (SLO 120 s)", "reelforge:time_to_first_frame_seconds:p95", "s"),
    ]),
    "providers": ("Reelforge — providers and GPU pools", [
        ("Pool utilisation", "max by (pool) (reelforge_pool_utilisation_ratio)", "percentunit"),
        ("Slots or GPUs in use by pool", "max by (pool) (reelforge_pool_in_use)", "none"),
        ("Pool capacity", "max by (pool) (reelforge_pool_capacity)", "none"),
        ("Circuit open (1) by pool", "max by (pool) (reelforge_pool_circuit_open)", "none"),
        ("Render error ratio by pool (5 m; budget 1%)", "reelforge:render_error_ratio:rate5m", "percentunit"),
        ("Error budget burn rate by pool (1 h)", "reelforge:render_error_ratio:rate1h / 0.01", "none"),
        ("Render results /s by pool and status",
         "sum by (pool, status) (rate(reelforge_render_results_total[5m]))", "ops"),
        ("Renders dispatched /s by pool", "sum by (pool) (rate(reelforge_scheduler_dispatched_total[5m]))", "ops"),
        ("p95 render duration by provider and model", "reelforge:render_seconds:p95", "s"),
        ("Renders finished /s by provider and status",
         "sum by (provider, status) (rate(reelforge_renders_finished_total[5m]))", "ops"),
        ("GPUs in use by pool", "max by (pool) (reelforge_pool_gpus_in_use)", "none"),
        ("GPU utilisation by pool", "reelforge:pool_gpu_utilisation:ratio", "percentunit"),
        ("GPU-seconds of the renders running now, by pool", "max by (pool) (reelforge_pool_gpu_seconds_in_use)",
         "s"),
        ("GPU-hours held per hour by pool", "sum by (pool) (increase(reelforge_pool_gpu_seconds_total[1h])) / 3600",
         "none"),
    ]),
    "billing": ("Reelforge — billing", [
        ("Charged per hour by tenant (USD)",
         "sum by (tenant) (increase(reelforge_job_charged_micros_total[1h])) / 1e6", "currencyUSD"),
        ("Charged per hour by model (USD)",
         "sum by (model) (increase(reelforge_job_charged_micros_total[1h])) / 1e6", "currencyUSD"),
        ("Video seconds billed per hour by model",
         "sum by (model) (increase(reelforge_job_output_seconds_total[1h]))", "s"),
        ("Jobs refused for credit or quota /s",
         "sum by (code) (rate(reelforge_job_failures_total"
         '{code=~"insufficient_credit|quota_exceeded|unpriceable"}[5m]))',
         "ops"),
        ("Usage metering lag (billing consumer)", 'sum(reelforge_consumer_lag{group="billing"})', "none"),
        ("Usage records handled /s by outcome",
         'sum by (outcome) (rate(reelforge_events_consumed_total{group="billing"}[5m]))', "ops"),
        ("Revenue posted per hour (ledger)", "reelforge:ledger_revenue_usd:increase1h", "currencyUSD"),
        ("Ledger balances by account kind (USD)",
         'max by (account_kind) (reelforge_ledger_balance_micros{currency="USD"}) / 1e6', "currencyUSD"),
        ("Posted per hour by account kind and direction (USD)",
         "max by (account_kind, direction) (increase(reelforge_ledger_posted_micros_total"
         '{currency="USD"}[1h])) / 1e6', "currencyUSD"),
    ]),
}


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": f"reelforge-{uid}",
        "title": title,
        "tags": ["reelforge"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
        }]},
        "panels": [
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr, "datasource": {"type": "prometheus", "uid": "${datasource}"}}],
            }
            for index, (panel_title, expr, unit) in enumerate(panels)
        ],
    }


def rendered() -> dict[Path, str]:
    return {
        HERE / "dashboards" / f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


if __name__ == "__main__":
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent.parent)}", file=sys.stderr)
