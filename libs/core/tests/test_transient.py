"""Which failures consumers wait out (retried for as long as they last) rather than dead-letter."""

from __future__ import annotations

import grpc

from reelforge_core.transient import is_transient


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


def test_grpc_codes() -> None:
    # A dependency down or slow, or our own services' token not yet aligned: wait for it.
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAUTHENTICATED):
        assert is_transient(_rpc_error(code)), code
    # The request itself is wrong: retrying cannot help.
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INTERNAL):
        assert not is_transient(_rpc_error(code)), code
