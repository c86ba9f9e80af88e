"""Shared steps of the end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "cancelled", "expired"}


def submit(api: httpx.Client, **job: Any) -> dict[str, Any]:
    response = api.post("/v1/jobs", json=job)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(api: httpx.Client, job_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = api.get(f"/v1/jobs/{job_id}").json()
        if view["status"] in states:
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {view}")


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def subtitle_text(path: Path) -> str:
    srt = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:s:0", "-f", "srt", "-"],
        capture_output=True, text=True, check=True,
    ).stdout
    lines = [
        line.strip() for line in srt.splitlines()
        if line.strip() and not line.strip().isdigit() and "-->" not in line
    ]
    return " ".join(lines)


def wait_for_usage_rows(stack: Any, job_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Billing's usage rows for `job_id`, once the usage event has been consumed (empty after `timeout`)."""
    from tests.conftest import db_fetch

    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:
        rows = db_fetch(stack, "billing", "SELECT * FROM usage_records WHERE job_id = $1", job_id)
        if not rows:
            time.sleep(0.5)
    return rows
