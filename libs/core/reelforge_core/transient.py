"""Which failures are worth waiting out: the world (broker, database, a peer service) is down,
not the record being handled."""

from __future__ import annotations

import asyncpg
import grpc
from aiokafka.errors import KafkaError

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ConnectionError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)

# UNAUTHENTICATED between our own services is a token an operator has yet to set or align (e.g. billing's):
# the work waits for the fix rather than being dead-lettered.
_TRANSIENT_GRPC_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
     grpc.StatusCode.ABORTED, grpc.StatusCode.UNAUTHENTICATED}
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _TRANSIENT_GRPC_CODES
    return isinstance(exc, _TRANSIENT_TYPES)
