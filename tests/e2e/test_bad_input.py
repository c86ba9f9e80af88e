"""Bad input on POST /v1/jobs gets a 4xx problem+json answer with a stable code, never a 500."""

from __future__ import annotations

import httpx
import pytest

from reelforge_local.stack import Stack

VALID = {"prompt": "A purifier", "seconds": 4, "size": "1280x720"}


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:reelforge:problem:{code}"
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size": "1234x567"}, "size"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": 61}, "seconds"),
        ({"seconds": "long"}, "seconds"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"model": "sora-9"}, "model"),
        ({"voice": "klingon"}, "voice"),
        ({"seed": -1}, "seed"),
        ({"unexpected": True}, "unexpected"),
    ],
)
def test_invalid_fields_are_named(api: httpx.Client, change: dict[str, object], field: str) -> None:
    body = _assert_problem(api.post("/v1/jobs", json={**VALID, **change}), 422, "invalid_request")
    assert field in [error["field"] for error in body["errors"]]  # type: ignore[attr-defined]


def test_missing_prompt(api: httpx.Client) -> None:
    body = _assert_problem(api.post("/v1/jobs", json={"seconds": 4}), 422, "invalid_request")
    assert "prompt" in [error["field"] for error in body["errors"]]  # type: ignore[attr-defined]


def test_malformed_json(api: httpx.Client) -> None:
    broken = b'{"prompt": "a", "seconds": '
    response = api.post("/v1/jobs", content=broken, headers={"content-type": "application/json"})
    _assert_problem(response, 400, "malformed_json")


def test_body_not_an_object(api: httpx.Client) -> None:
    _assert_problem(api.post("/v1/jobs", json=["prompt"]), 422, "invalid_request")


def test_oversized_body_with_length(api: httpx.Client) -> None:
    _assert_problem(api.post("/v1/jobs", json={**VALID, "prompt": "x" * 200_000}), 413, "payload_too_large")


def test_oversized_body_chunked(api: httpx.Client) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 10_000
        yield b'", "seconds": 4}'

    response = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    _assert_problem(response, 413, "payload_too_large")


def test_no_api_key(stack: Stack) -> None:
    response = httpx.post(f"{stack.gateway_url}/v1/jobs", json=VALID)
    _assert_problem(response, 401, "missing_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", ["nonsense", "rfk_0123456789_" + "a" * 43, "Basic abc"])
def test_wrong_api_key(stack: Stack, key: str) -> None:
    response = httpx.post(f"{stack.gateway_url}/v1/jobs", json=VALID, headers={"Authorization": f"Bearer {key}"})
    _assert_problem(response, 401, "invalid_api_key")


def test_unknown_job_and_route(api: httpx.Client) -> None:
    _assert_problem(api.get("/v1/jobs/job_doesnotexist"), 404, "job_not_found")
    _assert_problem(api.get("/v1/nothing-here"), 404, "not_found")
    _assert_problem(api.put("/v1/jobs", json=VALID), 405, "method_not_allowed")
