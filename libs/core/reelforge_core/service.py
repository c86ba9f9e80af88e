"""The lifecycle of one service process.

`run_service(settings, start)` sets up logs and tracing, lets `start` open what the service needs
through the `ServiceRuntime` (database with migrations and outbox relay, Kafka producer and
consumers, background tasks, an HTTP app), serves /healthz, /readyz and /metrics, and on SIGTERM
stops everything in reverse order within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI

from reelforge_core import db, logs, telemetry
from reelforge_core.kafka import BatchHandler, EventConsumer, EventProducer, Handler, RetryPolicy
from reelforge_core.ops import ReadinessCheck, ops_router, serve_http
from reelforge_core.outbox import OutboxRelay, forget_processed
from reelforge_core.settings import ServiceSettings

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[Any]]


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.readiness: dict[str, ReadinessCheck] = {}
        self.http_app: FastAPI | None = None
        self.http_socket: socket.socket | None = None  # set to serve on a shared listener (ops.shared_listener)
        self._tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
        self._closers: list[Closer] = []
        self._producer: EventProducer | None = None

    async def database(self, schema: str, migrations: Path, outbox: bool = True) -> asyncpg.Pool:
        """A pool on the service's own schema, migrated, with its outbox relay running (if `outbox`)."""
        pool = await db.create_pool(
            self.settings.database_url.get_secret_value(), schema, self.settings.database_pool_size
        )
        self._closers.append(pool.close)
        await db.migrate(pool, schema, migrations)
        self.readiness["postgres"] = lambda: db.ping(pool)
        hours = self.settings.inbox_retention_hours
        self.add_task("inbox-expiry", lambda: db.expire_forever("inbox entries", lambda: forget_processed(pool, hours)))
        if outbox:
            relay = OutboxRelay(pool, await self.producer(), schema)
            self.add_task("outbox-relay", relay.run)
        return pool

    async def producer(self) -> EventProducer:
        if self._producer is None:
            producer = EventProducer(self.settings.kafka_bootstrap, f"{self.settings.service_name}-producer")
            await producer.start()
            self._producer = producer
            self._closers.append(producer.stop)
        return self._producer

    async def consume(
        self, group: str, topic_names: list[str], handler: Handler, retry: RetryPolicy | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> EventConsumer:
        consumer = EventConsumer(
            self.settings.kafka_bootstrap, group, topic_names, handler, await self.producer(), retry,
            batch_handler=batch_handler,
        )
        self.readiness[f"kafka:{group}"] = _event_is_set(consumer.ready)
        self.add_task(f"consumer:{group}", consumer.run)
        return consumer

    def add_task(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._tasks[name] = run

    def on_close(self, closer: Closer) -> None:
        self._closers.append(closer)

    async def serve(self) -> None:
        app = self.http_app or FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        app.include_router(ops_router(self.readiness))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = {name: asyncio.create_task(run(), name=name) for name, run in self._tasks.items()}
        tasks["http"] = asyncio.create_task(serve_http(app, self.settings.http_host, self.settings.http_port,
                                                       self.http_socket))
        stopper = asyncio.create_task(stop.wait())
        log.info("service started", extra={"http_port": self.settings.http_port})
        done, _ = await asyncio.wait([stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception()]
        for task in failed:
            log.error("task died; stopping", exc_info=task.exception(), extra={"task": task.get_name()})
        log.info("service stopping")
        await self._shutdown([*tasks.values(), stopper])
        if failed:
            raise SystemExit(1)

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closer(), timeout=self.settings.shutdown_grace_seconds)


def _event_is_set(event: asyncio.Event) -> ReadinessCheck:
    async def check() -> bool:
        return event.is_set()

    return check


def run_service(settings: ServiceSettings, start: Callable[[ServiceRuntime], Awaitable[None]]) -> None:
    logs.setup_logging(settings.service_name, settings.log_level, settings.log_file)
    provider = telemetry.setup_tracing(settings)

    async def main() -> None:
        runtime = ServiceRuntime(settings)
        try:
            await start(runtime)
        except Exception:
            log.exception("service failed to start")
            await runtime._shutdown([])
            raise SystemExit(1) from None
        await runtime.serve()

    try:
        asyncio.run(main())
    finally:
        provider.shutdown()
        log.info("service stopped")
