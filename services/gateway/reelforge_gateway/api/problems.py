"""RFC 9457 problem details for every error the native API returns.

Each problem has a stable machine-readable `code`; `type` is `urn:reelforge:problem:<code>`.
On the OpenAI-compatible routes (/v1/videos) the same errors are rendered as OpenAI's error object,
`{"error": {"message", "type", "param", "code"}}`, so the official SDK raises the right exception class.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from reelforge_core import transient

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ProblemDetails(BaseModel):
    """RFC 9457 problem details as the native API returns them (extra members may appear)."""

    model_config = ConfigDict(extra="allow", title="ProblemDetails")
    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class Problem(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:reelforge:problem:{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers)


OPENAI_PREFIXES = ("/v1/videos", "/v1/webhook_endpoints", "/v1/webhook_event_types")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error object, on every error of the OpenAI-compatible routes."""

    error: OpenAIErrorDetail


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": text}
    for status, text in [(400, "Invalid request"), (401, "Missing or invalid API key"), (403, "The key lacks a scope"),
                         (404, "Not found for this key"), (422, "Idempotency-Key reused or prompt blocked"),
                         (429, "Rate limited")]
}


def is_openai_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in OPENAI_PREFIXES)


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _openai_type(status), "param": param, "code": code}}


def openai_error_response(problem: Problem) -> JSONResponse:
    message = f"{problem.title}: {problem.detail}" if problem.detail else problem.title
    param = problem.extra.get("param")
    headers = dict(problem.headers)
    # The SDK retries 408/409/429/5xx by default; only a rate limit or our own fault is worth retrying.
    if problem.status < 500 and problem.status != 429:
        headers.setdefault("x-should-retry", "false")
    body = openai_error_body(problem.status, problem.code, message, param if isinstance(param, str) else None)
    return JSONResponse(body, status_code=problem.status, headers=headers)


def render(problem: Problem, request: Request) -> JSONResponse:
    if is_openai_path(request.url.path):
        return openai_error_response(problem)
    return problem_response(problem, request.url.path)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        errors.append({"field": ".".join(location) or None, "message": error.get("msg", "invalid"),
                       "type": error.get("type")})
    return errors


_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route serves on this path (Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return render(exc, request)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            problem = Problem(400, "malformed_json", "The request body is not valid JSON")
        elif is_openai_path(request.url.path):
            first = errors[0] if errors else {"field": None, "message": "invalid"}
            detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
            problem = Problem(400, "invalid_value", "Invalid request", detail, param=first["field"])
        else:
            problem = Problem(422, "invalid_request", "The request has invalid fields", errors=errors)
        return render(problem, request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        problem = Problem(exc.status_code, code, str(exc.detail), headers=headers)
        return render(problem, request)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return render(unexpected(exc), request)


def unexpected(exc: Exception) -> Problem:
    """What an error that is not a Problem becomes (logged): 503 if a dependency is down, else 500."""
    if transient.is_transient(exc):
        log.warning("dependency unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        return Problem(503, "service_unavailable", "Temporarily unavailable; retry shortly",
                       headers={"Retry-After": "1"})
    log.exception("unhandled error", exc_info=exc)
    return Problem(500, "internal_error", "Something went wrong on our side")
