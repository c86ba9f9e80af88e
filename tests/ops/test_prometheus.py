"""Prometheus rules pass promtool's own unit tests, and a real Prometheus scraping the running
platform finds every service up and the key series the rules and dashboards use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reelforge_local.infra import free_port
from reelforge_local.stack import Stack
from tests.e2e.helpers import submit, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "reelforge.rules.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (./run installs Debian's prometheus package)"
    return path


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    promtool = _tool("promtool")
    subprocess.run([promtool, "check", "rules", str(RULES)], check=True, capture_output=True)
    done = subprocess.run(
        [promtool, "test", "rules", *map(str, sorted((DEPLOY / "prometheus" / "tests").glob("*.yml")))],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("prometheus")
    targets = [f"127.0.0.1:{service.http_port}" for service in stack.services.values()]
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "reelforge", "static_configs": [{"targets": targets}]}],
    }))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def _query(prometheus: str, expr: str) -> list[dict[str, object]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, object]] = response.json()["data"]["result"]
    return result


def _eventually(prometheus: str, expr: str, timeout: float = 30) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = _query(prometheus, expr)
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no series for {expr} after {timeout}s")


def test_real_prometheus_scrapes_every_service(stack: Stack, api: httpx.Client, prometheus: str) -> None:
    job = submit(api, prompt="Scraped", seconds=1, size="640x360")
    assert wait_for(api, job["id"], {"completed", "failed"})["status"] == "completed"

    up = _eventually(prometheus, 'up{job="reelforge"} == 1')
    deadline = time.monotonic() + 30
    while len(up) < len(stack.services) and time.monotonic() < deadline:
        time.sleep(0.5)
        up = _query(prometheus, 'up{job="reelforge"} == 1')
    assert len(up) == len(stack.services)
    for expr in (
        'reelforge_job_transitions_total{state="completed"}',
        'reelforge_events_consumed_total{outcome="ok"}',
        "reelforge_outbox_published_total",
        "reelforge_consumer_lag",
        "reelforge_event_handler_seconds_bucket",
        "reelforge:consumer_lag:sum",
        'reelforge_jobs_finished_total{status="completed", model="animatic"}',
        'reelforge_render_results_total{pool="animatic", status="ok"}',
        "reelforge_job_time_to_first_frame_seconds_bucket",
        'reelforge_renders_finished_total{provider="animatic", status="ok"}',
        'reelforge_render_output_seconds_total{provider="animatic"}',
        'reelforge_postprocess_seconds_bucket{status="ok"}',
        'reelforge_postprocess_finished_total{status="ok"}',
        'reelforge_render_seconds_bucket{provider="animatic", model="animatic", status="ok"}',
        "reelforge:render_seconds:p95",
        'reelforge_pool_gpus_in_use{pool="animatic"}',
        'reelforge_pool_gpus{pool="animatic"}',
        'reelforge_pool_gpu_seconds_in_use{pool="animatic"}',
        'reelforge_pool_gpu_seconds_total{pool="animatic"}',
        'reelforge_ledger_posted_micros_total{account_kind="revenue", currency="USD", direction="in"} > 0',
        'reelforge_ledger_balance_micros{account_kind="tenant_available", currency="USD"} > 0',
        'reelforge_ledger_entries_total{account_kind="grants"}',
        "reelforge:ledger_revenue_usd:increase1h",
    ):
        assert _eventually(prometheus, expr), expr


def _run_one_ok_and_one_failed_job(stack: Stack, api: httpx.Client) -> None:
    """Labelled series appear once used: one job completes, one fails (no credit)."""
    job = submit(api, prompt="Metrics", seconds=1, size="640x360")
    broke = stack.create_tenant(f"metrics-broke-{uuid.uuid4().hex[:6]}", credit_usd="0")
    with httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {broke.api_key}"},
                      timeout=15) as broke_api:
        failed = submit(broke_api, prompt="Metrics failure", seconds=1, size="640x360")
        assert wait_for(broke_api, failed["id"], {"completed", "failed"})["status"] == "failed"
    assert wait_for(api, job["id"], {"completed", "failed"})["status"] == "completed"
    time.sleep(1.5)  # consumer lag is sampled once a second
    billing = f"{stack.services['billing'].url}/metrics"
    deadline = time.monotonic() + 15  # the ledger totals are folded in every 5 s
    while "reelforge_ledger_posted_micros_total{" not in httpx.get(billing, timeout=5).text:
        assert time.monotonic() < deadline, "billing never exposed the ledger totals"
        time.sleep(0.5)


def _scrape(stack: Stack) -> str:
    return "\n".join(httpx.get(f"{service.url}/metrics", timeout=5).text for service in stack.services.values())


def test_every_metric_the_dashboards_and_rules_use_exists(stack: Stack, api: httpx.Client) -> None:
    _run_one_ok_and_one_failed_job(stack, api)
    series = re.finditer(r"^(reelforge_\w+?)(?:_bucket|_count|_sum|_created)?[{ ]", _scrape(stack), re.M)
    exposed = {m.group(1) for m in series}
    rules_text = RULES.read_text()
    recorded = set(re.findall(r"record: (\S+)", rules_text))
    used = set(re.findall(r"\b(reelforge_[a-z_]+)", rules_text))
    for dashboard in DASHBOARDS:
        for panel in json.loads(dashboard.read_text())["panels"]:
            for target in panel.get("targets", []):
                used |= set(re.findall(r"\b(reelforge_[a-z_]+)", target["expr"]))
                recorded_used = set(re.findall(r"\b(reelforge:[a-z0-9_:]+)", target["expr"]))
                unknown = recorded_used - recorded
                assert not unknown, f"{dashboard.name}: unknown recording rules {unknown}"
    base = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    missing = {name for name in base if name not in exposed and f"{name}_total" not in exposed
               and name.removesuffix("_total") not in exposed}
    assert not missing, f"used but not exposed by any service: {sorted(missing)}"


def test_dashboards_are_generated_from_the_source() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate", DEPLOY / "grafana" / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for path, text in generate.rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run deploy/grafana/generate.py"
    assert DASHBOARDS


# The platform's label vocabulary. Ids of jobs, renders or events never become labels.
LABELS = {"tenant", "model", "pool", "provider", "status", "state", "tier", "code", "group", "topic", "outcome",
          "kind", "account_kind", "currency", "direction", "le", "quantile"}
MAX_SERIES_PER_METRIC = 500


def test_metric_labels_are_consistent_and_bounded(stack: Stack, api: httpx.Client) -> None:
    _run_one_ok_and_one_failed_job(stack, api)
    text = _scrape(stack)
    per_metric: dict[str, set[str]] = {}
    for match in re.finditer(r"^(reelforge_\w+)\{([^}]*)\}", text, re.M):
        name, labels = match.groups()
        pairs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        assert set(pairs) <= LABELS, f"{name}: labels outside the vocabulary: {set(pairs) - LABELS}"
        for label, value in pairs.items():
            assert not re.fullmatch(r"(job|ren|evt)_[0-9a-f]{8,}.*|[0-9a-f-]{32,36}", value), (name, label, value)
        per_metric.setdefault(name, set()).add(labels)
    for name, series in per_metric.items():
        assert len(series) <= MAX_SERIES_PER_METRIC, f"{name} has {len(series)} series"
    types = dict(re.findall(r"^# TYPE (reelforge_\w+) (\w+)", text, re.M))
    for name, kind in types.items():
        if kind == "histogram":
            assert name.endswith("_seconds"), f"histogram {name} should measure seconds"
    # the job metrics carry tenant, model and status; pools carry pool
    finished = [m for m in re.finditer(r"^reelforge_jobs_finished_total\{([^}]*)\}", text, re.M)]
    assert finished and all({"tenant", "model", "status"} <= set(re.findall(r"(\w+)=", m.group(1)))
                            for m in finished)
    assert re.search(r'^reelforge_render_results_total\{pool="animatic",provider="animatic",status="ok"\}', text,
                     re.M)
    assert re.search(r'^reelforge_job_failures_total\{code="insufficient_credit",model="animatic"\}', text, re.M)
    assert re.search(r'^reelforge_render_seconds_bucket\{le="[^"]+",model="animatic",provider="animatic",status="ok"\}',
                     text, re.M)
    kinds = set(re.findall(r'^reelforge_ledger_balance_micros\{account_kind="(\w+)",currency="USD"\}', text, re.M))
    assert {"revenue", "grants", "tenant_available", "tenant_reserved"} <= kinds <= {
        "revenue", "grants", "promotions", "free_usage", "tenant_available", "tenant_reserved", "other"}, kinds
