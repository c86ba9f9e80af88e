"""/healthz, /readyz and /metrics for every service, and an in-process uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reelforge_core.security_headers import SecurityHeaders

ReadinessCheck = Callable[[], Awaitable[bool]]


def ops_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results = {name: False for name in checks}
        for name, check in checks.items():
            with contextlib.suppress(Exception):
                results[name] = await asyncio.wait_for(check(), timeout=2)
        ready = all(results.values())
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service runtime owns SIGTERM/SIGINT and stops this server itself.
        yield


async def serve_http(app: FastAPI, host: str, port: int, sock: socket.socket | None = None) -> None:
    """Serves `app` on host:port, or on `sock` (e.g. a `shared_listener` several processes serve)."""
    config = uvicorn.Config(SecurityHeaders(app), host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", server_header=False, http="httptools")
    server = _Server(config)
    try:
        await server.serve(sockets=[sock] if sock is not None else None)
    except asyncio.CancelledError:
        server.should_exit = True
        raise


def shared_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT: other processes bind the same port the same way and the
    kernel spreads new connections over all of them. Port 0 picks a free port (read it from the socket)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock
