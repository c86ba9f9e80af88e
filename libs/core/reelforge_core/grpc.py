"""gRPC plumbing: servers with health, reflection and tracing; client channels that carry the trace."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import SecretStr

from reelforge_core import telemetry
from reelforge_core.grpc_auth import BearerClientInterceptor, OperatorTokenInterceptor
from reelforge_core.grpc_guard import GuardServerInterceptor, HandlerCache

_tracer = trace.get_tracer(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
# A target naming several addresses ("ipv4:a:1,b:2") spreads calls over all healthy ones.
_CLIENT_OPTIONS = [*_OPTIONS, ("grpc.lb_policy_name", "round_robin")]


_EMPTY_CONTEXT = otel_context.Context()
_CLIENT_ATTRIBUTES = {"rpc.system": "grpc"}


def _server_parent(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The caller's trace context from call metadata; extraction only runs when a trace header came."""
    fields = propagate.get_global_textmap().fields
    carrier = {k: v for k, v in metadata or () if k in fields and isinstance(v, str)}
    return telemetry.context_from(carrier) if carrier else _EMPTY_CONTEXT


def _traced_unary(method: str, inner: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    attributes = {"rpc.system": "grpc", "rpc.method": method}

    async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # start_as_current_span's two generator context managers, unrolled: this runs on every call
        span = _tracer.start_span(
            method, context=_server_parent(context.invocation_metadata()), kind=SpanKind.SERVER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = inner(request, context)
            # synchronous handlers (the stock health servicer) return the response itself
            return await result if inspect.isawaitable(result) else result
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    return traced


class _TracingServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps each method's handler once and reuses it: the trace parent is read from the call itself."""

    def __init__(self) -> None:
        self._wrapped = HandlerCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return self._wrapped.get(handler_call_details.method, handler, self._wrap)

    @staticmethod
    def _wrap(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            _traced_unary(method, cast(Callable[..., Any], handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _TracingClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._names: dict[str | bytes, str] = {}

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        name = self._names.get(method)
        if name is None:
            name = self._names[method] = method.decode() if isinstance(method, bytes) else str(method)
        span = _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=_CLIENT_ATTRIBUTES)
        # The interceptor runs in its own task, so the span needs no attaching: it only has to reach the headers.
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            client_call_details = grpc.aio.ClientCallDetails(
                method, client_call_details.timeout,
                grpc.aio.Metadata(*(client_call_details.metadata or ()), *carrier.items()),
                client_call_details.credentials, client_call_details.wait_for_ready,
            )
        try:
            call = await continuation(client_call_details, request)
            await call
        except grpc.aio.AioRpcError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.code().name))
            span.record_exception(exc)
            raise
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.record_exception(exc)
            raise
        finally:
            span.end()
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
