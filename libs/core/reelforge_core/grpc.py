"""gRPC plumbing: servers with health, reflection and tracing; client channels that carry the trace."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import SecretStr

from reelforge_core import telemetry
from reelforge_core.grpc_auth import BearerClientInterceptor, OperatorTokenInterceptor
from reelforge_core.grpc_guard import GuardServerInterceptor

_tracer = trace.get_tracer(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
# A target naming several addresses ("ipv4:a:1,b:2") spreads calls over all healthy ones.
_CLIENT_OPTIONS = [*_OPTIONS, ("grpc.lb_policy_name", "round_robin")]


class _TracingServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        carrier = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        method = handler_call_details.method
        inner = handler.unary_unary

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _tracer.start_as_current_span(
                method, context=telemetry.context_from(carrier), kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.method": method},
            ):
                result = inner(request, cast(Any, context))
                # synchronous handlers (the stock health servicer) return the response itself
                return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes={"rpc.system": "grpc"}) as span:
            metadata = list(client_call_details.metadata or []) + list(telemetry.inject_headers().items())
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                grpc.aio.Metadata(*metadata),
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            call = await continuation(details, request)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.code().name))
                raise
            return call


def create_server(
    service_names: Iterable[str], operator_auth: OperatorTokenInterceptor | None = None
) -> tuple[grpc.aio.Server, health.HealthServicer]:
    """A server with tracing, health checking and reflection for `service_names` (full names).

    `operator_auth` guards the operator services it names; it runs innermost, so a malformed or
    oversized call still gets its own clear status first."""
    interceptors: list[Any] = [GuardServerInterceptor(), _TracingServerInterceptor()]
    if operator_auth is not None:
        interceptors.append(operator_auth)
    server = grpc.aio.server(interceptors=interceptors, options=_OPTIONS)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return server, health_servicer


def channel(target: str, operator_token: str | SecretStr | None = None) -> grpc.aio.Channel:
    """A traced client channel; with `operator_token`, every call carries it (for operator APIs)."""
    interceptors: list[Any] = [_TracingClientInterceptor()]
    if operator_token is not None:
        interceptors.append(BearerClientInterceptor(operator_token))
    return grpc.aio.insecure_channel(target, interceptors=interceptors, options=_CLIENT_OPTIONS)
