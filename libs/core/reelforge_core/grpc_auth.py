"""Operator APIs over gRPC answer only callers that present the operator token.

The token travels as call metadata `authorization: Bearer <token>` and is compared in constant time.
A server started without a token refuses every call to its operator services (secure by default),
saying which setting enables them. Health and reflection stay open.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from pydantic import SecretStr

Metadata = tuple[tuple[str, str | bytes], ...]


def bearer(token: str | SecretStr | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token` (none when there is no token)."""
    if isinstance(token, SecretStr):
        token = token.get_secret_value()
    return (("authorization", f"Bearer {token}"),) if token else ()


class OperatorTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls to `services` (full names) with UNAUTHENTICATED unless they carry the token.

    `setting` names the environment variable that configures the token, for the refusal message.
    """

    def __init__(self, token: str | SecretStr | None, services: Iterable[str], setting: str) -> None:
        if isinstance(token, SecretStr):
            token = token.get_secret_value()
        self._token = token.encode() if token else None
        self._services = frozenset(services)
        self._setting = setting

    def refusal(self, metadata: Metadata | None) -> str | None:
        """Why a call with `metadata` is refused, or None when it may go on."""
        if self._token is None:
            return f"operator API disabled: this server has no operator token (set {self._setting})"
        presented = next((v for k, v in metadata or () if k.lower() == "authorization"), None)
        if isinstance(presented, bytes):
            presented = presented.decode(errors="replace")
        scheme, _, value = (presented or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return "missing operator token: send call metadata 'authorization: Bearer <token>'"
        if not hmac.compare_digest(value.strip().encode(), self._token):
            return "invalid operator token"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.lstrip("/").partition("/")[0]
        if handler is None or service not in self._services:
            return handler
        reason = self.refusal(handler_call_details.invocation_metadata)  # type: ignore[arg-type]
        if reason is None:
            return handler

        if handler.unary_stream is not None:
            async def refuse_stream(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                yield  # pragma: no cover - abort raises

            return grpc.unary_stream_rpc_method_handler(
                refuse_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        return grpc.unary_unary_rpc_method_handler(
            refuse, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class BearerClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Sends the operator token with every unary call on an aio channel."""

    def __init__(self, token: str | SecretStr) -> None:
        self._metadata = bearer(token)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = [*(client_call_details.metadata or ()), *self._metadata]
        details = grpc.aio.ClientCallDetails(
            client_call_details.method, client_call_details.timeout, grpc.aio.Metadata(*metadata),
            client_call_details.credentials, client_call_details.wait_for_ready,
        )
        return await continuation(details, request)
