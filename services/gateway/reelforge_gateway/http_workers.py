"""More processes for the REST API: `http_workers` processes serve one port (SO_REUSEPORT).

The service process keeps everything else (consumers, outbox relay, gRPC, webhook delivery); each
extra process only serves HTTP, with its own database pool, key cache (kept honest by its own key
change feed) and group commit. What must agree across processes already lives in PostgreSQL (rate
limit buckets, idempotency keys, jobs); the download signing secret is passed to every process (one is
made if none is configured). Each process serves its own /metrics (a scrape sees one process's
counters). A worker ends when the service process does (parent-death signal); a worker that ends on its
own is restarted by the service process (`Workers.supervise`), and one that keeps dying stops the service
(exit 1) rather than leave it serving with fewer processes than configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import secrets
import signal
import time
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
    def __init__(self, settings: GatewaySettings, port: int, processes: list[BaseProcess]) -> None:
        self.settings, self.port, self.processes = settings, port, processes
        self.restarts = 0
        self._stopping = False

    @classmethod
    def start(cls, settings: GatewaySettings, port: int, count: int) -> Workers:
        workers = cls(settings, port, [])
        workers.processes = [workers._spawn(n + 1) for n in range(count)]
        log.info("http workers started", extra={"count": count, "http_port": port})
        return workers

    def _spawn(self, number: int) -> BaseProcess:
        process = multiprocessing.get_context("spawn").Process(
            target=run_worker, args=(self.settings, self.port, number), daemon=True, name=f"gateway-http-{number}")
        process.start()
        return process

    async def supervise(self, check_seconds: float = 0.5, max_restarts: int = 5, window_seconds: float = 60.0) -> None:
        """Restarts a worker that ended; raises (the service stops, exit 1) after `max_restarts` within
        `window_seconds`, since a worker that cannot stay up is a fault a restart of the service may cure."""
        recent: list[float] = []
        while not self._stopping:
            await asyncio.sleep(check_seconds)
            for index, process in enumerate(self.processes):
                if self._stopping or process.is_alive():
                    continue
                now = time.monotonic()
                recent = [t for t in recent if now - t < window_seconds] + [now]
                log.warning("http worker ended; restarting it", extra={
                    "worker": process.name, "pid": process.pid, "exitcode": process.exitcode})
                if len(recent) > max_restarts:
                    raise RuntimeError(f"http workers ended {len(recent)} times in {window_seconds:.0f}s")
                self.processes[index] = self._spawn(index + 1)
                self.restarts += 1

    async def stop(self) -> None:
        self._stopping = True
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
    from reelforge_gateway.__main__ import SCHEMA
    from reelforge_gateway.api.app import create_app

    dsn = settings.database_url.get_secret_value()
    pool = await db.create_pool(dsn, SCHEMA, settings.database_pool_size)
    app = create_app(pool, open_content_store(settings), settings)
    app.include_router(ops.ops_router({"postgres": lambda: db.ping(pool)}))
    app.state.notifications.start()
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
        await app.state.notifications.close()
        await app.state.group_commit.close()
        await pool.close()
