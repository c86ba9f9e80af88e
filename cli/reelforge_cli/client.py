"""A small client for the gateway's native API, turning problem+json answers into readable errors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code = status, code


class NotConfigured(Exception):
    pass


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str


def state_file() -> Path:
    return Path(os.environ.get("REELFORGE_CACHE", ".cache")) / "run" / "stack.json"


def resolve_target(url: str | None, api_key: str | None) -> Target:
    """Flags first, then REELFORGE_API_URL / REELFORGE_API_KEY, then the platform `reelforge up` runs."""
    url = url or os.environ.get("REELFORGE_API_URL")
    api_key = api_key or os.environ.get("REELFORGE_API_KEY")
    if (not url or not api_key) and state_file().exists():
        state = json.loads(state_file().read_text())
        url, api_key = url or state["gateway_url"], api_key or state["api_key"]
    if not url or not api_key:
        raise NotConfigured(
            "no platform to talk to: start one with `reelforge up`, or set REELFORGE_API_URL and REELFORGE_API_KEY"
        )
    return Target(url=url, api_key=api_key)


class Client:
    def __init__(self, target: Target) -> None:
        self._http = httpx.Client(
            base_url=target.url, headers={"Authorization": f"Bearer {target.api_key}"}, timeout=30
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._http.post("/v1/jobs", json=job))

    def get(self, job_id: str) -> dict[str, Any]:
        return self._json(self._http.get(f"/v1/jobs/{job_id}"))

    def download(self, job_id: str, target: Path) -> int:
        with self._http.stream("GET", f"/v1/jobs/{job_id}/content") as response:
            if response.status_code != 200:
                response.read()
                self._json(response)
            size = 0
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        return size

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            detail = body.get("detail") or body.get("title") or response.reason_phrase
            errors = body.get("errors") or []
            if errors:
                detail += ": " + "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
            raise ApiError(response.status_code, body.get("code", "http_error"), detail)
        return body
