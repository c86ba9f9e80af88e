"""More processes for the REST API: `http_workers` processes serve one port (SO_REUSEPORT).

The service process keeps everything else (consumers, outbox relay, gRPC, webhook delivery); each
extra process only serves HTTP, with its own database pool, key cache (kept honest by its own key
change feed) and group commit. What must agree across processes already lives in PostgreSQL (rate
limit buckets, idempotency keys, jobs); the download signing secret is passed to every process (one is
made if none is configured). Each process serves its own /metrics (a scrape sees one process's
counters). A worker ends when the service process does (parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import secrets
import signal
from multiprocessing.process import BaseProcess

from pydantic import SecretStr

from reelforge_core import db, logs, ops, telemetry
from reelforge_core.content import open_content_store
from reelforge_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def with_shared_secret(settings: GatewaySettings) -> GatewaySettings:
    """The settings every process uses: one download signing secret for all of them."""
    if settings.download_signing_secret is not None:
        return settings
    return settings.model_copy(update={"download_signing_secret": SecretStr(secrets.token_urlsafe(32))})


class Workers:
    def __init__(self, processes: list[BaseProcess]) -> None:
        self.processes = processes

    @classmethod
    def start(cls, settings: GatewaySettings, port: int, count: int) -> Workers:
        context = multiprocessing.get_context("spawn")
        processes: list[BaseProcess] = []
        for n in range(count):
            process = context.Process(target=run_worker, args=(settings, port, n + 1), daemon=True,
                                      name=f"gateway-http-{n + 1}")
            process.start()
            processes.append(process)
        log.info("http workers started", extra={"count": count, "http_port": port})
        return cls(processes)

    async def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        loop = asyncio.get_running_loop()
        for process in self.processes:
            await loop.run_in_executor(None, process.join, 10)
            if process.is_alive():
                process.kill()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_worker(settings: GatewaySettings, port: int, number: int) -> None:
    """One extra HTTP process (the entry of a spawned process)."""
    import uvloop

    _die_with_parent()
    settings = settings.model_copy(update={"instance_id": f"{settings.instance_id}-http{number}"})
    logs.setup_logging(settings.service_name, settings.log_level, settings.log_file)
    provider = telemetry.setup_tracing(settings)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(settings, port))
    finally:
        provider.shutdown()


async def _serve(settings: GatewaySettings, port: int) -> None:
    from reelforge_gateway import key_changes
    from reelforge_gateway.__main__ import SCHEMA
    from reelforge_gateway.api.app import create_app

    dsn = settings.database_url.get_secret_value()
    pool = await db.create_pool(dsn, SCHEMA, settings.database_pool_size)
    request_pool = await db.create_pool(dsn, SCHEMA, settings.database_pool_size, stateless=True)
    app = create_app(pool, open_content_store(settings), settings, request_pool)
    app.include_router(ops.ops_router({"postgres": lambda: db.ping(pool)}))
    follower = asyncio.create_task(key_changes.follow(pool, app.state.key_cache))
    server = asyncio.create_task(ops.serve_http(app, settings.http_host, port,
                                                ops.shared_listener(settings.http_host, port)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.cancel)
    try:
        await server
    except asyncio.CancelledError:
        pass
    finally:
        follower.cancel()
        await app.state.group_commit.close()
        await request_pool.close()
        await pool.close()
