"""The HTTP server span continues the caller's W3C trace context and names the route, not the path."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reelforge_core import asgi_tracing

pytestmark = pytest.mark.asyncio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(asgi_tracing, "_tracer", provider.get_tracer("test"))
    return exporter


def app() -> asgi_tracing.TracingMiddleware:
    api = FastAPI()

    @api.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    return asgi_tracing.TracingMiddleware(api)


async def test_span_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/things/t-1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                                          "x-other": "ignored"})
    assert answer.status_code == 200
    (span,) = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.name == "GET /things/{thing_id}"
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 200


async def test_without_a_caller_context_a_new_trace_starts(spans: InMemorySpanExporter) -> None:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/nowhere")).status_code == 404
    (span,) = spans.get_finished_spans()
    assert span.parent is None and f"{span.context.trace_id:032x}" != TRACE_ID
    assert span.name == "GET unmatched"
