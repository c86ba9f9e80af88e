"""OpenTelemetry tracing: provider setup and W3C trace-context propagation through carriers."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from reelforge_core.settings import ServiceSettings


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object per line (local runs and tests)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_span_record(span)) for span in spans]
        with self._lock, self._path.open("a") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _span_record(span: ReadableSpan) -> dict[str, object]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "service": span.resource.attributes.get("service.name"),
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


def setup_tracing(settings: ServiceSettings) -> TracerProvider:
    resource = Resource.create(
        {"service.name": settings.service_name, "service.instance.id": settings.instance_id}
    )
    # With nowhere to export, spans are not recorded (recording them costs about a tenth of a status read's
    # CPU), though they still carry ids, so logs and downstream services keep the trace context. Otherwise
    # the SDK's sampler applies (OTEL_TRACES_SAMPLER; default: every span, or as its caller sampled).
    exports = bool(settings.otlp_endpoint or settings.trace_file)
    provider = TracerProvider(resource=resource, sampler=None if exports else ALWAYS_OFF)
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    if settings.trace_file:
        provider.add_span_processor(
            BatchSpanProcessor(JsonLinesSpanExporter(settings.trace_file), schedule_delay_millis=200)
        )
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str]) -> otel_context.Context:
    return extract(carrier)


def inject_into(carrier: MutableMapping[str, str]) -> None:
    inject(carrier)
