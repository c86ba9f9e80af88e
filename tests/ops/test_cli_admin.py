"""`reelforge tenants|keys ...` against the real platform's admin API."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from typer.testing import CliRunner

from reelforge_cli.main import app
from reelforge_local.stack import Stack


@pytest.fixture
def run(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> CliRunner:
    monkeypatch.setenv("REELFORGE_API_URL", stack.gateway_url)
    monkeypatch.setenv("REELFORGE_ADMIN_KEY", stack.admin_key())
    monkeypatch.setenv("REELFORGE_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_tenants_and_keys_from_the_command_line(stack: Stack, run: CliRunner) -> None:
    made = run.invoke(app, ["tenants", "create", "cli-admin-tenant", "--max-concurrent", "3", "--json"])
    assert made.exit_code == 0, made.output
    tenant = json.loads(made.stdout)
    assert tenant["max_concurrent_jobs"] == 3

    listed = run.invoke(app, ["tenants", "list"])
    assert listed.exit_code == 0 and "cli-admin-tenant" in listed.stdout
    updated = run.invoke(app, ["tenants", "update", tenant["id"], "--max-concurrent", "default", "--rpm", "600",
                               "--json"])
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["max_concurrent_jobs"] is None
    assert json.loads(updated.stdout)["rate_limit_per_minute"] == 600

    created = run.invoke(app, ["keys", "create", tenant["id"], "--scope", "jobs:read", "--name", "ci",
                               "--expires-in", "30d"])
    assert created.exit_code == 0, created.output
    secret = re.search(r"key: (rfk_\S+)", created.stdout)
    assert secret is not None and "cannot be shown again" in created.stderr
    key = secret.group(1)
    assert httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    keys = json.loads(run.invoke(app, ["keys", "list", tenant["id"], "--json"]).stdout)
    assert [k["name"] for k in keys] == ["ci"] and keys[0]["key"] is None
    key_id = keys[0]["id"]

    rotated = run.invoke(app, ["keys", "rotate", key_id, "--grace", "0s", "--json"])
    assert rotated.exit_code == 0, rotated.output
    new_key = json.loads(rotated.stdout)
    assert new_key["rotated_from"] == key_id and new_key["key"].startswith("rfk_")
    assert httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401

    revoked = run.invoke(app, ["keys", "revoke", new_key["id"]])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert httpx.get(f"{stack.gateway_url}/v1/jobs",
                     headers={"Authorization": f"Bearer {new_key['key']}"}).status_code == 401


def test_helpful_errors(stack: Stack, run: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = run.invoke(app, ["tenants", "get", "ten_000000000000000000000000"])
    assert missing.exit_code == 1 and "tenant_not_found" in missing.stderr
    taken = run.invoke(app, ["tenants", "create", "cli-dup"])
    again = run.invoke(app, ["tenants", "create", "cli-dup"])
    assert taken.exit_code == 0 and again.exit_code == 1 and "tenant_name_taken" in again.stderr
    bad = run.invoke(app, ["keys", "create", "ten_x", "--expires-in", "soon"])
    assert bad.exit_code == 2 and "duration" in bad.stderr
    nothing = run.invoke(app, ["tenants", "update", "ten_x"])
    assert nothing.exit_code == 2 and "nothing to change" in nothing.stderr
    tenant = stack.create_tenant("cli-not-admin", credit_usd="0")
    monkeypatch.setenv("REELFORGE_ADMIN_KEY", tenant.api_key)
    refused = run.invoke(app, ["tenants", "list"])
    assert refused.exit_code == 1 and "insufficient_scope" in refused.stderr and "admin-scoped" in refused.stderr
    monkeypatch.delenv("REELFORGE_ADMIN_KEY")
    unconfigured = run.invoke(app, ["tenants", "list"])
    assert unconfigured.exit_code == 2 and "create-admin-key" in unconfigured.stderr
    assert "Traceback" not in missing.output + again.output + refused.output + unconfigured.output
