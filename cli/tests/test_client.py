from __future__ import annotations

import json
from pathlib import Path

import pytest

from reelforge_cli.client import NotConfigured, resolve_target


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_API_URL", "http://env")
    monkeypatch.setenv("REELFORGE_API_KEY", "env-key")
    assert resolve_target("http://flag", None).url == "http://flag"
    assert resolve_target(None, None).api_key == "env-key"


def test_falls_back_to_the_running_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REELFORGE_API_URL", raising=False)
    monkeypatch.delenv("REELFORGE_API_KEY", raising=False)
    monkeypatch.setenv("REELFORGE_CACHE", str(tmp_path))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stack.json").write_text(json.dumps({"gateway_url": "http://up", "api_key": "k", "pid": 1}))
    target = resolve_target(None, None)
    assert (target.url, target.api_key) == ("http://up", "k")


def test_nothing_configured_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REELFORGE_API_URL", raising=False)
    monkeypatch.delenv("REELFORGE_API_KEY", raising=False)
    monkeypatch.setenv("REELFORGE_CACHE", str(tmp_path))
    with pytest.raises(NotConfigured, match="reelforge up"):
        resolve_target(None, None)
