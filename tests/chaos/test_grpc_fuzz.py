"""Every gRPC method of the running platform, fed malformed, oversized, zero-deadline and randomly
filled messages (unknown enum values, huge and odd strings, extreme numbers): each call gets a clear
status code (never UNKNOWN, never INTERNAL), and the servers keep serving. Admin methods that change
settings get only the malformed, oversized and zero-deadline calls."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message as pb_message
from google.protobuf import symbol_database
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reelforge.billing.v1 import billing_pb2, spend_pb2
from reelforge.jobs.v1 import jobs_service_pb2
from reelforge.orchestrator.v1 import admin_pb2
from reelforge_core import grpc as core_grpc
from reelforge_core.grpc_auth import bearer
from reelforge_local.stack import Stack

RANDOM_CALLS_PER_METHOD = 25
# Services that answer only callers with the operator token (BillingService: the platform services present it).
OPERATOR_SERVICES = {"OrchestratorAdmin", "BillingService", "BillingAdminService", "SpendService"}
UNDECODABLE = b"\x0f\xff\xff\xff"
FD = pb_descriptor.FieldDescriptor
_ODD_STRINGS = ["", " ", "\x00", "../../etc/passwd", "' OR 1=1 --", "\u202e\ufeff", "ж" * 300, "x" * 70_000,
                "00000000-0000-0000-0000-000000000000", "%s%n", "{{7*7}}"]
_ODD_INTS = [0, -1, 1, 2**31 - 1, -(2**31), 2**53 + 1]


def _targets(stack: Stack) -> list[tuple[str, pb_descriptor.ServiceDescriptor]]:
    billing_port = stack.services["billing"].env["REELFORGE_BILLING_GRPC_PORT"]
    billing = f"127.0.0.1:{billing_port}"
    return [
        (billing, billing_pb2.DESCRIPTOR.services_by_name["BillingService"]),
        (billing, billing_pb2.DESCRIPTOR.services_by_name["BillingAdminService"]),
        (billing, spend_pb2.DESCRIPTOR.services_by_name["SpendService"]),
        (stack.gateway_grpc_target, jobs_service_pb2.DESCRIPTOR.services_by_name["JobsService"]),
        (stack.admin_target, admin_pb2.DESCRIPTOR.services_by_name["OrchestratorAdmin"]),
    ]


def _methods(stack: Stack) -> Iterator[tuple[str, pb_descriptor.MethodDescriptor]]:
    for target, service in _targets(stack):
        for method in service.methods:
            if not method.client_streaming:
                yield target, method


def _changes_platform_settings(method: pb_descriptor.MethodDescriptor) -> bool:
    return "Admin" in method.containing_service.name and not method.name.startswith(("Get", "List"))


def _message_class(descriptor: pb_descriptor.Descriptor) -> type[pb_message.Message]:
    cls: type[pb_message.Message] = symbol_database.Default().GetSymbol(descriptor.full_name)
    return cls


def _fill(message: pb_message.Message, rng: random.Random, depth: int = 0) -> None:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        repeated = field.is_repeated
        for _ in range(rng.randint(1, 3) if repeated else 1):
            if field.type == FD.TYPE_MESSAGE:
                if depth >= 2 or field.message_type.GetOptions().map_entry:
                    continue
                child = getattr(message, field.name).add() if repeated else getattr(message, field.name)
                _fill(child, rng, depth + 1)
                if not repeated:
                    getattr(message, field.name).SetInParent()
                continue
            value = _value(field, rng)
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)


def _value(field: pb_descriptor.FieldDescriptor, rng: random.Random) -> Any:
    if field.type == FD.TYPE_STRING:
        return rng.choice(_ODD_STRINGS)
    if field.type == FD.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 64, 4096]))
    if field.type == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type == FD.TYPE_ENUM:
        return rng.choice([*(v.number for v in field.enum_type.values), 9999, -7])
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, 1e308, float("nan"), float("inf"), 3.5])
    unsigned = field.type in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64)
    small = field.type in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32, FD.TYPE_UINT32, FD.TYPE_FIXED32)
    candidates = [v for v in _ODD_INTS if not (unsigned and v < 0) and not (small and abs(v) >= 2**31)]
    return rng.choice(candidates)


async def _call(target: str, method: pb_descriptor.MethodDescriptor, payload: bytes,
                deadline: float | None = 10, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]) as ch:
        try:
            if method.server_streaming:
                [_ async for _ in ch.unary_stream(path)(payload, timeout=deadline, metadata=metadata)]
            else:
                await ch.unary_unary(path)(payload, timeout=deadline, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            assert error.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), \
                f"{path}: {error.code().name} {error.details()}"
            return error.code()
    return grpc.StatusCode.OK


async def _fuzz(stack: Stack) -> dict[str, set[str]]:
    rng = random.Random(20261125)
    seen: dict[str, set[str]] = {}
    operator = bearer(stack.operator_token)
    for target, method in _methods(stack):
        name = f"{method.containing_service.name}.{method.name}"
        codes = seen.setdefault(name, set())
        if method.containing_service.name in OPERATOR_SERVICES:  # the operator token first, then the fuzzing
            assert await _call(target, method, b"") is grpc.StatusCode.UNAUTHENTICATED, name
            assert await _call(target, method, b"", metadata=bearer("forged")) is grpc.StatusCode.UNAUTHENTICATED
        call = functools.partial(_call, metadata=operator)
        assert await call(target, method, UNDECODABLE) is grpc.StatusCode.INVALID_ARGUMENT, name
        assert await call(target, method, b"x" * (core_grpc.MAX_MESSAGE_BYTES + 1)) \
            is grpc.StatusCode.RESOURCE_EXHAUSTED, name
        # Usually DEADLINE_EXCEEDED; a fast server may answer first. Either way a clear code (see _call).
        codes.add((await call(target, method, b"", deadline=0)).name)
        if _changes_platform_settings(method):
            continue  # random contracts, routes or prices would change what the other tests run against
        codes.add((await call(target, method, b"")).name)
        request_class = _message_class(method.input_type)
        for _ in range(RANDOM_CALLS_PER_METHOD):
            request = request_class()
            _fill(request, rng)
            codes.add((await call(target, method, request.SerializeToString())).name)
    for target, _service in _targets(stack):
        async with grpc.aio.insecure_channel(target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING, target
    return seen


def test_every_grpc_method_answers_bad_input_clearly(stack: Stack) -> None:
    seen = asyncio.run(_fuzz(stack))
    assert seen, "no gRPC methods were found to fuzz"
    print({name: sorted(codes) for name, codes in seen.items()})
