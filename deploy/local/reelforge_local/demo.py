"""The sample job: an 8-second 1280x720 ad for a water purifier, with narration, end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from reelforge_local.stack import Stack, Tenant

SAMPLE_JOB = {
    "prompt": (
        "A sleek countertop water purifier on a sunlit kitchen counter. "
        "Clear water pours into a glass. Close-up of the filter cartridge. "
        "AquaPure: pure water, every day."
    ),
    "seconds": 8,
    "size": "1280x720",
    "narration": "Meet AquaPure. Clean, great-tasting water, straight from your tap. Filtered in seconds.",
    "seed": 42,
}

TERMINAL = {"completed", "failed", "cancelled", "expired"}


def say(line: str) -> None:
    print(line, flush=True)


def submit_and_wait(stack: Stack, tenant: Tenant, job: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=10) as client:
        created = client.post("/v1/jobs", json=job)
        if created.status_code != 202:
            raise SystemExit(f"submit failed: {created.status_code} {created.text}")
        view: dict[str, Any] = created.json()
        say(f"submitted {view['id']} ({view['size']}, {view['seconds']:g}s)")
        last = None
        deadline = time.monotonic() + timeout
        while view["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {view['id']} still {view['status']} after {timeout:.0f}s")
            time.sleep(0.2)
            view = client.get(f"/v1/jobs/{view['id']}").json()
            if (view["status"], view["progress"]) != last:
                last = (view["status"], view["progress"])
                bar = "#" * (view["progress"] // 5)
                say(f"  [{bar:<20}] {view['progress']:3d}%  {view['status']}")
        return view


def download(stack: Stack, tenant: Tenant, view: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{view['id']}.mp4"
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    with httpx.stream("GET", f"{stack.gateway_url}{view['content_url']}", headers=headers, timeout=30) as r:
        r.raise_for_status()
        with target.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
    return target


def timeline_report(view: dict[str, Any]) -> list[str]:
    entries = [(e["status"], datetime.fromisoformat(e["at"])) for e in view["timeline"]]
    start = entries[0][1]
    at = dict(entries)
    lines = [f"  {status:<15} +{(moment - start).total_seconds():7.3f}s" for status, moment in entries]
    if {"rendering", "postprocessing", "completed"} <= at.keys():
        total = (at["completed"] - start).total_seconds()
        render = (at["postprocessing"] - at["rendering"]).total_seconds()
        finish = (at["completed"] - at["postprocessing"]).total_seconds()
        lines.append(f"  total {total:.2f}s = render {render:.2f}s + postprocess {finish:.2f}s"
                     f" + platform overhead {total - render - finish:.2f}s")
    return lines


def describe_media(path: Path) -> str:
    if not shutil.which("ffprobe"):
        return ""
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout)
    streams = ", ".join(
        f"{s['codec_type']}:{s['codec_name']}" + (f" {s['width']}x{s['height']}" if s["codec_type"] == "video" else "")
        for s in probe["streams"]
    )
    return f"{float(probe['format']['duration']):.2f}s, {streams}"


def run_demo(stack: Stack, out_dir: Path) -> int:
    tenant = stack.create_tenant("demo")
    say(f"tenant 'demo' ready ({tenant.tenant_id}); API key created and stored hashed")
    view = submit_and_wait(stack, tenant, SAMPLE_JOB)
    say("timeline:")
    for line in timeline_report(view):
        say(line)
    if view["status"] != "completed":
        say(f"job ended {view['status']}: {view.get('error')}")
        return 1
    path = download(stack, tenant, view, out_dir)
    cost = view["cost"]
    say(f"cost: {cost['amount_micros'] / 1_000_000:.4f} {cost['currency']} for {view['output_seconds']:.2f}s")
    say(f"video: {describe_media(path)}")
    say(f"finished MP4: {path}")
    return 0


def main_demo(run_dir: Path, cache_dir: Path, out_dir: Path) -> int:
    began = time.monotonic()
    with Stack(run_dir, cache_dir, progress=lambda line: say(f"  {line}")) as stack:
        say("starting the platform (real Kafka, PostgreSQL and five services)…")
        stack.start()
        say(f"platform up in {time.monotonic() - began:.1f}s; gateway at {stack.gateway_url}")
        code = run_demo(stack, out_dir)
        say("stopping the platform…")
    say(f"done in {time.monotonic() - began:.1f}s")
    return code


def main_up(run_dir: Path, cache_dir: Path, replicas: int = 1) -> int:
    """Runs the platform until Ctrl-C or SIGTERM (`reelforge down`); leaves run/stack.json meanwhile
    so the CLI finds the gateway and the demo key."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    state = run_dir / "stack.json"
    with Stack(run_dir, cache_dir, progress=lambda line: say(f"  {line}"), replicas=replicas) as stack:
        stack.start()
        tenant = stack.create_tenant("demo")
        admin_key = stack.admin_key()
        state.touch(mode=0o600)
        state.write_text(json.dumps({
            "pid": os.getpid(), "gateway_url": stack.gateway_url, "api_key": tenant.api_key,
            "services": {p.label: p.url for p in stack.processes()},
            "gateway_grpc": stack.gateway_grpc_target, "admin_api_key": admin_key,
            "console_url": stack.console_url, "operator_token": stack.operator_token,
            "admin_target": stack.admin_target, "billing_target": stack.billing_target,
        }))
        say(f"gateway: {stack.gateway_url}  (docs at {stack.gateway_url}/docs; gRPC at {stack.gateway_grpc_target})")
        say(f"ops console: {stack.console_url}")
        say(f"demo API key: {tenant.api_key}")
        say(f"admin API key (tenants and keys: `reelforge tenants|keys ...`): {admin_key}")
        say(f"logs: {stack.logs_dir}   Ctrl-C (or `reelforge down`) stops everything")
        try:
            while not stopping.is_set():
                dead = [p.label for p in stack.processes() if p.proc is None or p.proc.poll() is not None]
                if dead:
                    say(f"exited: {', '.join(dead)}; stopping the rest")
                    break
                stopping.wait(1)
        except KeyboardInterrupt:
            pass
        finally:
            state.unlink(missing_ok=True)
        say("stopping…")
    return 0


