"""`reelforge contracts|pools|usage` against the shared platform's admin and billing gRPC APIs:
tables with what changed, and one-line errors (no traceback) for bad input or no platform."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx

from reelforge_local.stack import Stack, Tenant
from tests.e2e.helpers import submit, wait_for


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "REELFORGE_CACHE": str(cwd / "no-stack")}
    done = subprocess.run([sys.executable, "-m", "reelforge_cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env=env)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def _row(output: str, first: str) -> list[str]:
    """The cells of the table row starting with `first` in rich's box-drawn output."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_pools_pause_drain_resume(stack: Stack, tmp_path: Path) -> None:
    admin = ("--admin", stack.admin_target, "--token", stack.operator_token)
    listed = _cli("pools", "list", *admin, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = _row(listed.stdout, "animatic")
    assert row[1:3] == ["animatic", "animatic"] and row[3].endswith("/8") and row[4].endswith("%"), row
    assert row[5:] == ["closed", "active"], row
    try:
        for mode, state in (("pause", "paused"), ("drain", "draining"), ("resume", "active")):
            changed = _cli("pools", mode, "animatic", *admin, cwd=tmp_path)
            assert changed.returncode == 0, changed.stderr
            assert f"pool animatic is now {state}" in changed.stdout
            assert _row(changed.stdout, "animatic")[-1] == state  # the pool as the admin API now reports it
    finally:
        _cli("pools", "resume", "animatic", *admin, cwd=tmp_path)
    unknown = _cli("pools", "drain", "nope", *admin, cwd=tmp_path)
    assert unknown.returncode == 1 and "no pool 'nope' (not_found)" in unknown.stderr


def test_pools_breaker_show_change_and_reset(stack: Stack, tmp_path: Path) -> None:
    admin = ("--admin", stack.admin_target, "--token", stack.operator_token)
    try:
        changed = _cli("pools", "breaker", "animatic", "--open-seconds", "45", "--probes", "3", *admin, cwd=tmp_path)
        assert changed.returncode == 0, changed.stderr
        assert "pool animatic: circuit breaker changed" in changed.stdout
        assert _row(changed.stdout, "open for")[1:] == ["45 s", "pool"]
        assert _row(changed.stdout, "half-open probes")[1:] == ["3", "pool"]
        assert _row(changed.stdout, "window")[2] == "process default"
        more = _cli("pools", "breaker", "animatic", "--min-calls", "4", *admin, cwd=tmp_path)
        assert _row(more.stdout, "min calls")[1:] == ["4", "pool"]
        assert _row(more.stdout, "open for")[1:] == ["45 s", "pool"]  # the pool's other settings are kept
        bad = _cli("pools", "breaker", "animatic", "--error-rate", "2", *admin, cwd=tmp_path)
        assert bad.returncode == 1
        assert "invalid breaker: error_rate must be above 0 and at most 1 (got 2.0) (invalid_argument)" in " ".join(
            bad.stderr.split())
        unknown = _cli("pools", "breaker", "nope", *admin, cwd=tmp_path)
        assert unknown.returncode == 1 and "no pool 'nope' (not_found)" in unknown.stderr
    finally:
        reset = _cli("pools", "breaker", "animatic", "--reset", *admin, cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    assert {_row(reset.stdout, label)[2] for label in ("window", "min calls", "open for")} == {"process default"}


def test_contracts_get_and_set(stack: Stack, tmp_path: Path) -> None:
    tenant = stack.create_tenant("cli-contracts", credit_usd="0")
    admin = ("--admin", stack.admin_target, "--token", stack.operator_token)
    missing = _cli("contracts", "get", tenant.tenant_id, *admin, cwd=tmp_path)
    assert missing.returncode == 1 and f"no contract for '{tenant.tenant_id}'" in missing.stderr

    created = _cli("contracts", "set", tenant.tenant_id, "--tier", "enterprise", "--weight", "2.5",
                   "--max-concurrent", "3", "--daily-seconds", "120", "--models", "animatic", *admin, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    got = _cli("contracts", "get", tenant.tenant_id, *admin, cwd=tmp_path).stdout
    assert _row(got, "tier")[1] == "enterprise" and _row(got, "weight")[1] == "2.5"
    assert _row(got, "max concurrent")[1] == "3" and _row(got, "daily quota")[1] == "120 s"
    assert _row(got, "allowed models")[1] == "animatic"
    assert _row(got, "requests per minute")[1] == _row(
        _cli("contracts", "get", "*", *admin, cwd=tmp_path).stdout, "requests per minute")[1]  # from the default

    changed = _cli("contracts", "set", tenant.tenant_id, "--no-daily-quota", "--models", "", *admin, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert _row(changed.stdout, "tier")[1] == "enterprise"  # untouched
    assert _row(changed.stdout, "daily quota")[1] == "none"
    assert _row(changed.stdout, "allowed models")[1] == "every routed model"

    bad = _cli("contracts", "set", tenant.tenant_id, "--weight", "0", *admin, cwd=tmp_path)
    assert bad.returncode == 2 and "weight" in bad.stderr


def test_usage_export_and_spend(stack: Stack, tenant: Tenant, api: httpx.Client, tmp_path: Path) -> None:
    job = submit(api, prompt="Exported usage", seconds=1, size="640x360")
    assert wait_for(api, job["id"], {"completed", "failed"})["status"] == "completed"
    billing = ("--billing", stack.billing_target, "--token", stack.operator_token)
    out = tmp_path / "usage.csv"
    deadline = time.monotonic() + 30
    while True:  # usage rows arrive through Kafka, a moment after the job completes
        exported = _cli("usage", "export", tenant.tenant_id, "-o", str(out), *billing, cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        if any(r["job_id"] == job["id"] for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any(r["job_id"] == job["id"] and r["resolution"] == "640x360" for r in rows), rows
    assert f"exported {len(rows)} usage rows for {tenant.tenant_id}" in exported.stderr.replace("\n", " ")
    to_stdout = _cli("usage", "export", tenant.tenant_id, *billing, cwd=tmp_path)
    assert to_stdout.stdout == out.read_text()

    spend = _cli("usage", "spend", *billing, cwd=tmp_path)
    assert spend.returncode == 0, spend.stderr
    assert float(_row(spend.stdout, tenant.tenant_id)[2]) > 0
    bad = _cli("usage", "export", tenant.tenant_id, "--month", "2026-13", *billing, cwd=tmp_path)
    assert bad.returncode == 1 and "month must be YYYY-MM" in bad.stderr and "invalid_argument" in bad.stderr


def test_a_missing_or_wrong_operator_token_is_a_readable_error(stack: Stack, tmp_path: Path) -> None:
    missing = _cli("pools", "list", "--admin", stack.admin_target, cwd=tmp_path)
    assert missing.returncode == 1 and "refused the call: missing operator token" in missing.stderr
    assert "--token" in missing.stderr and "REELFORGE_OPERATOR_TOKEN" in missing.stderr
    wrong = _cli("pools", "pause", "animatic", "--admin", stack.admin_target, "--token", "not-the-token", cwd=tmp_path)
    assert wrong.returncode == 1 and "invalid operator token" in wrong.stderr
    spend = _cli("usage", "spend", "--billing", stack.billing_target, "--token", "not-the-token", cwd=tmp_path)
    assert spend.returncode == 1 and "invalid operator token" in spend.stderr


def test_no_platform_is_a_readable_error(tmp_path: Path) -> None:
    nothing = _cli("pools", "list", cwd=tmp_path)
    assert nothing.returncode == 2 and "reelforge up" in nothing.stderr and "REELFORGE_ADMIN_TARGET" in nothing.stderr
    down = _cli("usage", "spend", "--billing", "127.0.0.1:1", cwd=tmp_path)
    assert down.returncode == 1 and "cannot reach the billing API at 127.0.0.1:1" in down.stderr
