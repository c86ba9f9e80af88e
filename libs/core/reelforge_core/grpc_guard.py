"""Bad gRPC input gets a clear status, never a crash or a leaked exception.

grpc answers an undecodable request with INTERNAL ("Exception deserializing request") and an
unexpected handler exception with UNKNOWN carrying the exception's text. This interceptor turns
the first into INVALID_ARGUMENT and the second into a bare INTERNAL (the details go to the log).
A PostgreSQL data exception (SQLSTATE class 22: a NUL in a string, a malformed UUID, a number out
of range) can only come from the request's values, so it is INVALID_ARGUMENT as well.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import asyncpg
import grpc

log = logging.getLogger(__name__)


class _Malformed:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # any decode failure is the client's malformed message
            return _Malformed(type(exc).__name__)

    return deserialize


async def _reject_malformed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if isinstance(request, _Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request message ({request.reason})")


async def _internal(method: str, context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    if isinstance(exc, asyncpg.DataError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid value in the request ({exc.sqlstate})")
    log.exception("gRPC handler failed", extra={"rpc_method": method}, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


MAX_DETAILS_CHARS = 500


def _bounded(details: str | None) -> str | None:
    if details is None or len(details) <= MAX_DETAILS_CHARS:
        return details
    return details[: MAX_DETAILS_CHARS - 1] + "…"


class _BoundedContext:
    """Error details can echo a client's value; a long one would break the status trailer (16 KB)."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        await self._context.abort(code, _bounded(details) or "", trailing_metadata)

    def set_details(self, details: str) -> None:
        self._context.set_details(_bounded(details) or "")


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class HandlerCache:
    """Each method's wrapped handler, built once.

    A server interceptor that wraps handlers would otherwise build closures and a handler per call.
    An entry is reused only while the inner interceptors keep answering with the very same handler, so
    a per-call handler from them (an operator-token refusal, say) is wrapped afresh, never mixed up.
    Only methods the server serves get entries, so the cache is bounded by the server's methods.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler, wrap: Callable[[str, Handler], Handler]) -> Handler:
        entry = self._entries.get(method)
        if entry is not None and entry[0] is handler:
            return entry[1]
        wrapped = wrap(method, handler)
        self._entries[method] = (handler, wrapped)
        return wrapped


def _guard(method: str, handler: Handler) -> Handler:
    deserializer = _tolerant(handler.request_deserializer)
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Malformed):
                await _reject_malformed(request, context)
            try:
                result = unary(request, _BoundedContext(context))  # type: ignore[arg-type]
                return await result if inspect.isawaitable(result) else result
            except (grpc.aio.AbortError, grpc.aio.BaseError):
                raise
            except Exception as exc:
                await _internal(method, context, exc)

        return grpc.unary_unary_rpc_method_handler(
            guarded_unary, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await _reject_malformed(request, context)
            try:
                result = stream(request, _BoundedContext(context))  # type: ignore[arg-type]
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result
                else:
                    for item in result:
                        yield item
            except (grpc.aio.AbortError, grpc.aio.BaseError):
                raise
            except Exception as exc:
                await _internal(method, context, exc)

        return grpc.unary_stream_rpc_method_handler(
            guarded_stream, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
    return handler


class GuardServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._guarded = HandlerCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        return self._guarded.get(handler_call_details.method, handler, _guard)
