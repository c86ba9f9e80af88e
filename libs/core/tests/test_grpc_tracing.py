"""The trace context crosses a call made through reelforge_core's channel and server, call by call:
the server's handlers are wrapped once per method, so nothing of one call's trace may stick to the next."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from reelforge_core import grpc as core_grpc

SERVICE = "reelforge.test.Traced"
pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def seen() -> AsyncIterator[tuple[str, list[int]]]:
    """A core server whose handler records the trace id it runs under, and its target."""
    trace_ids: list[int] = []

    async def check(request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server, _ = core_grpc.create_server([SERVICE])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", trace_ids
    finally:
        await server.stop(None)


async def test_each_call_carries_its_own_trace(seen: tuple[str, list[int]]) -> None:
    target, trace_ids = seen
    tracer = TracerProvider().get_tracer(__name__)
    async with core_grpc.channel(target) as channel:
        check = channel.unary_unary(
            f"/{SERVICE}/Check", request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        expected = []
        for name in ("first", "second"):
            with tracer.start_as_current_span(name) as span:
                expected.append(span.get_span_context().trace_id)
                await check(health_pb2.HealthCheckRequest(service=SERVICE))
        await check(health_pb2.HealthCheckRequest(service=SERVICE))
        # the stock health servicer answers synchronously through the same wrapping
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert trace_ids[:2] == expected and expected[0] != expected[1]
    assert trace_ids[2] not in expected
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
