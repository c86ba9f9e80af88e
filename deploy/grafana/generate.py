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
