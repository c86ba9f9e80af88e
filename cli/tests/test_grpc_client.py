from __future__ import annotations

import json
from pathlib import Path

import pytest

from reelforge_cli.client import NotConfigured
from reelforge_cli.grpc_client import ADMIN, BILLING, operator_metadata, resolve


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("REELFORGE_ADMIN_TARGET", "REELFORGE_BILLING_TARGET", "REELFORGE_OPERATOR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REELFORGE_CACHE", str(tmp_path))
    return tmp_path


def test_flag_then_environment_then_the_running_platform(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean / "run").mkdir()
    (clean / "run" / "stack.json").write_text(json.dumps(
        {"pid": 1, "admin_target": "127.0.0.1:7001", "billing_target": "127.0.0.1:7002", "operator_token": "t0k"}))
    assert resolve(ADMIN, None) == "127.0.0.1:7001" and resolve(BILLING, None) == "127.0.0.1:7002"
    assert operator_metadata() == (("authorization", "Bearer t0k"),)
    monkeypatch.setenv("REELFORGE_ADMIN_TARGET", "admin.internal:50052")
    assert resolve(ADMIN, None) == "admin.internal:50052"
    assert resolve(ADMIN, "flag:1") == "flag:1"


def test_nothing_configured_names_the_variable(clean: Path) -> None:
    with pytest.raises(NotConfigured, match="REELFORGE_BILLING_TARGET"):
        resolve(BILLING, None)
    assert operator_metadata() == ()
