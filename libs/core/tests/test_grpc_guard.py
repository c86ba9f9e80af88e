"""Malformed, oversized and zero-deadline calls get clear status codes from a real gRPC server, and
handler bugs never leak their exception text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from reelforge_core import grpc as core_grpc

SERVICE = "reelforge.test.Probe"
pytestmark = pytest.mark.asyncio


async def _check(request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    if request.service == "boom":
        raise RuntimeError("secret database password in this message")
    if request.service == "missing":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request.service.startswith("long"):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown tenant {request.service}")
    if request.service == "slow":
        await asyncio.sleep(0.05)
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _watch(
    request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[health_pb2.HealthCheckResponse]:
    yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    if request.service == "boom":
        raise RuntimeError("secret in a stream")
    yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


@pytest_asyncio.fixture
async def target() -> AsyncIterator[str]:
    server, _ = core_grpc.create_server([SERVICE])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            _check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
        "Watch": grpc.unary_stream_rpc_method_handler(
            _watch, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString),
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def _raw_call(target: str, method: str, payload: bytes, deadline: float | None = 5) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(payload, timeout=deadline)
    return failure.value


async def _check_answer(target: str, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
    async with core_grpc.channel(target) as channel:
        check = channel.unary_unary(
            f"/{SERVICE}/Check", request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        answer: health_pb2.HealthCheckResponse = await check(request, timeout=5)
        return answer


async def test_undecodable_request_is_invalid_argument(target: str) -> None:
    error = await _raw_call(target, "Check", b"\x0f\xff\xff\xff")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request" in (error.details() or "")


async def test_oversized_request_is_resource_exhausted(target: str) -> None:
    big = health_pb2.HealthCheckRequest(service="x" * (core_grpc.MAX_MESSAGE_BYTES + 10)).SerializeToString()
    error = await _raw_call(target, "Check", big)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_zero_deadline_is_deadline_exceeded(target: str) -> None:
    # gRPC deadlines have millisecond resolution: a zero deadline on an instant answer may still be met,
    # so the handler takes a moment and the deadline has always passed before it answers.
    request = health_pb2.HealthCheckRequest(service="slow").SerializeToString()
    error = await _raw_call(target, "Check", request, deadline=0)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    answer = await _check_answer(target, health_pb2.HealthCheckRequest(service="fine"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_handler_bug_is_a_bare_internal_error(target: str) -> None:
    error = await _raw_call(target, "Check", health_pb2.HealthCheckRequest(service="boom").SerializeToString())
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in (error.details() or "")


async def test_aborts_and_answers_pass_through(target: str) -> None:
    error = await _raw_call(target, "Check", health_pb2.HealthCheckRequest(service="missing").SerializeToString())
    assert error.code() is grpc.StatusCode.NOT_FOUND
    answer = await _check_answer(target, health_pb2.HealthCheckRequest(service="fine"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_error_details_echoing_a_huge_value_are_bounded(target: str) -> None:
    request = health_pb2.HealthCheckRequest(service="long" + "x" * 70_000).SerializeToString()
    error = await _raw_call(target, "Check", request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("unknown tenant longxxx")
    assert len(error.details() or "") <= 500


async def test_streams_are_guarded_too(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        watch = channel.unary_stream(
            f"/{SERVICE}/Watch", response_deserializer=health_pb2.HealthCheckResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            [item async for item in watch(b"\x0f\xff\xff\xff", timeout=5)]
        assert malformed.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        fine = [item.status async for item in watch(
            health_pb2.HealthCheckRequest(service="fine").SerializeToString(), timeout=5)]
        assert fine == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]

        seen: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as bug:
            async for item in watch(health_pb2.HealthCheckRequest(service="boom").SerializeToString(), timeout=5):
                seen.append(item.status)
        assert seen == [health_pb2.HealthCheckResponse.SERVING]
        assert bug.value.code() is grpc.StatusCode.INTERNAL
        assert "secret" not in (bug.value.details() or "")


async def test_database_data_errors_are_invalid_argument() -> None:
    async def failing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        raise asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00')

    server, _ = core_grpc.create_server([SERVICE])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(failing)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        error = await _raw_call(f"127.0.0.1:{port}", "Check", b"")
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "22021" in (error.details() or "")
    finally:
        await server.stop(None)
