"""A server span per HTTP request, continuing the caller's W3C trace context if it sent one."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelforge_core import telemetry

_tracer = trace.get_tracer(__name__)
# Only the W3C trace context headers are read: decoding every header of every request costs more.
_CONTEXT_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name in _CONTEXT_HEADERS}
        method = scope["method"]
        status_code = 500

        async def recording_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        with _tracer.start_as_current_span(
            method, context=telemetry.context_from(carrier), kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as span:
            try:
                await self.app(scope, receive, recording_send)
            finally:
                route = scope.get("route")
                # The route template, not the raw path: span names must not carry ids.
                span.update_name(f"{method} {getattr(route, 'path', 'unmatched')}")
                span.set_attribute("http.response.status_code", status_code)
                if status_code >= 500:
                    span.set_status(Status(StatusCode.ERROR))
