"""Prometheus rules pass promtool's own unit tests, and a real Prometheus scraping the running
platform finds every service up and the key series the rules and dashboards use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
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
        [promtool, "test", "rules", str(DEPLOY / "prometheus" / "tests" / "reelforge.rules.test.yml")],
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
    ):
        assert _eventually(prometheus, expr), expr


def test_every_metric_the_dashboards_and_rules_use_exists(stack: Stack, api: httpx.Client) -> None:
    # Labelled series appear once used: run one job through first.
    job = submit(api, prompt="Metrics", seconds=1, size="640x360")
    assert wait_for(api, job["id"], {"completed", "failed"})["status"] == "completed"
    time.sleep(1.5)  # consumer lag is sampled once a second
    exposed: set[str] = set()
    for service in stack.services.values():
        text = httpx.get(f"{service.url}/metrics", timeout=5).text
        series = re.finditer(r"^(reelforge_\w+?)(?:_bucket|_count|_sum|_created)?[{ ]", text, re.M)
        exposed |= {m.group(1) for m in series}
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
