"""The two hottest routes, POST /v1/jobs and GET /v1/jobs/{id}, without the framework's per-request cost.

This ASGI middleware answers a request only on the happy path, with the routes' own functions
(`jobs.accept_job`, `jobs.read_job_json`) and the same answer bytes. Anything else (no or bad key, a
body that is not a plain job in JSON, invalid fields, a template, a chunked body) goes to the FastAPI
route unchanged, with the body already read, so every error is the route's own. Nothing is charged
before the hand-over point: a request handed over has not taken a rate-limit token. After it (the
rate limit, the tenant's job limits, moderation, idempotency), problems are rendered here the way the
app's handler renders them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelforge_gateway.api import idempotency, jobs
from reelforge_gateway.api.auth import Caller, Gatekeeper
from reelforge_gateway.api.problems import Problem, problem_response, unexpected

_JOB_PATH = re.compile(r"^/v1/jobs/([^/]+)$")
_NOT_PLAIN = frozenset({"template", "variables", "variants"})
_MAX_BODY = 1 << 20


class _HandOver(Exception):
    """The request is not for the fast path: let the route answer it."""


class _Gone(Exception):
    """The client went away while sending its body: nobody to answer."""


class FastJobs:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: dict[tuple[str, str], BaseRoute] | None = None

    def _route(self, method: str, path: str) -> BaseRoute | None:
        if self._routes is None:
            self._routes = {(method, getattr(route, "path", "")): route for route in self.api.routes
                            for method in getattr(route, "methods", None) or ()}
        return self._routes.get((method, path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/v1/jobs":
            await self._create(scope, receive, send)
        elif method == "GET" and (match := _JOB_PATH.match(path)) is not None:
            await self._read(scope, receive, send, match.group(1))
        else:
            await self.app(scope, receive, send)

    async def _caller(self, scope: Scope, scope_name: str) -> Caller:
        gatekeeper: Gatekeeper = self.api.state.gatekeeper
        authorization = _header(scope, b"authorization")
        if authorization is None:
            raise _HandOver
        try:
            caller = await gatekeeper.caller(authorization)
        except Exception:  # a problem, or the database: the route answers it its own way
            raise _HandOver from None
        if scope_name not in caller.scopes:
            raise _HandOver
        return caller

    async def _admit(self, scope: Scope, caller: Caller) -> None:
        """Takes the rate-limit token (a problem from here on is answered here, not handed over)."""
        gatekeeper: Gatekeeper = self.api.state.gatekeeper
        decision = await gatekeeper.admit(caller)
        if decision is not None:
            scope.setdefault("state", {})["rate_limit"] = decision  # RateLimitHeaders adds the headers

    async def _read(self, scope: Scope, receive: Receive, send: Send, job_id: str) -> None:
        try:
            caller = await self._caller(scope, "jobs:read")
        except _HandOver:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route("GET", "/v1/jobs/{job_id}")
        try:
            await self._admit(scope, caller)
            answer = await jobs.read_job_json(self.api.state, caller, job_id)
        except Exception as exc:
            problem = exc if isinstance(exc, Problem) else unexpected(exc)
            await problem_response(problem, scope["path"])(scope, receive, send)
            return
        response = Response(answer, media_type="application/json")
        await response(scope, receive, send)

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        body: bytes | None = None
        try:
            try:
                body = await _read_body(scope, receive)
            except _Gone:
                return
            caller = await self._caller(scope, "jobs:write")
            data = orjson.loads(body)
            if not isinstance(data, dict) or not _NOT_PLAIN.isdisjoint(data):
                raise _HandOver
            job = jobs.CreateJob.model_validate(data)
            raw_key = _header(scope, idempotency.HEADER.lower().encode())
            key = (idempotency.for_request(raw_key, "POST", scope["path"], jobs.fingerprint(job))
                   if raw_key is not None else None)
        except (_HandOver, orjson.JSONDecodeError, ValidationError, Problem):
            await self.app(scope, receive if body is None else _replay(body, receive), send)
            return
        scope["route"] = self._route("POST", "/v1/jobs")
        try:
            await self._admit(scope, caller)
            submitted = await jobs.accept_job(self.api.state, caller, job, key)
        except Exception as exc:
            problem = exc if isinstance(exc, Problem) else unexpected(exc)
            await problem_response(problem, scope["path"])(scope, receive, send)
            return
        job_id = submitted.body["id"]
        trace.get_current_span().set_attribute("reelforge.job_id", job_id)
        headers = {"Location": f"/v1/jobs/{job_id}"}
        if submitted.replayed:
            headers["Idempotent-Replayed"] = "true"
        await JSONResponse(submitted.body, status_code=submitted.status_code, headers=headers)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The whole body of a JSON request with a Content-Length (anything else is handed over unread)."""
    content_type = (_header(scope, b"content-type") or "").partition(";")[0].strip().lower()
    length = _header(scope, b"content-length")
    if content_type != "application/json" or length is None or not length.isdigit() or int(length) > _MAX_BODY:
        raise _HandOver
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Gone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the route: the body already read, then whatever comes next (e.g. a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": False}
            return message
        return await receive()

    return replay
