"""The `reelforge` CLI against the real platform: submit, watch, download, and readable errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reelforge_local.stack import Stack, Tenant


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelforge_cli", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd, env={"PATH": "/usr/bin:/bin", "COLUMNS": "120"})


def test_submit_waits_and_downloads(stack: Stack, tenant: Tenant, tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    done = _cli("jobs", "submit", "A purifier, from the command line", "--seconds", "1", "--size", "640x360",
                "--narration", "From the CLI.", "-o", str(out), "--url", stack.gateway_url,
                "--api-key", tenant.api_key, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout and "cost:" in done.stdout
    assert out.stat().st_size > 1000


def test_bad_input_is_a_readable_error(stack: Stack, tenant: Tenant, tmp_path: Path) -> None:
    done = _cli("jobs", "submit", "x", "--size", "1x1", "--url", stack.gateway_url, "--api-key", tenant.api_key,
                cwd=tmp_path)
    assert done.returncode == 1
    assert "size" in done.stderr and "invalid_request" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_wrong_key_and_no_platform(stack: Stack, tmp_path: Path) -> None:
    wrong = _cli("jobs", "get", "job_x", "--url", stack.gateway_url, "--api-key", "nope", cwd=tmp_path)
    assert wrong.returncode == 1 and "invalid_api_key" in wrong.stderr
    nothing = _cli("jobs", "get", "job_x", cwd=tmp_path)
    assert nothing.returncode == 2 and "reelforge up" in nothing.stderr
    assert "Traceback" not in wrong.stderr + nothing.stderr
