"""`python -m reelforge_render` runs the render adapter."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from reelforge_core import topics
from reelforge_core.content import ContentStore
from reelforge_core.service import ServiceRuntime, run_service
from reelforge_render.providers.animatic import AnimaticProvider
from reelforge_render.providers.base import Provider
from reelforge_render.providers.registry import create_provider
from reelforge_render.settings import RenderSettings
from reelforge_render.tracker import Tracker
from reelforge_render.webhooks import webhook_router
from reelforge_render.worker import CONSUMER, RenderWorker

log = logging.getLogger(__name__)

SCHEMA = "render"
MIGRATIONS = Path(__file__).parent / "migrations"


def build_providers(settings: RenderSettings, content: ContentStore) -> dict[str, Provider]:
    providers: dict[str, Provider] = {
        "animatic": AnimaticProvider(settings.animatic_max_pixels, settings.render_timeout_seconds,
                                     content.scratch_dir(), settings.animatic_max_parallel),
    }
    for name, config in settings.providers.items():
        providers[name] = create_provider(name, config)
    return providers


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, RenderSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS)
    content = ContentStore(settings.content_dir, min_free_bytes=settings.content_min_free_bytes)
    providers = build_providers(settings, content)
    for provider in providers.values():
        runtime.on_close(provider.close)
    tracker = Tracker(pool, content, providers, workers=settings.tracker_workers, jitter=settings.poll_jitter)
    runtime.add_task("render-tracker", lambda: track_while_leading(pool, tracker))
    timeouts = {name: config.timeout_seconds for name, config in settings.providers.items()}
    worker = RenderWorker(pool, providers, tracker, timeouts, settings.render_timeout_seconds)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(webhook_router(tracker))
    runtime.http_app = app
    await runtime.consume(CONSUMER, [topics.RENDER_REQUESTED, topics.RENDER_CANCEL_REQUESTED], worker.handle)


async def track_while_leading(pool: asyncpg.Pool, tracker: Tracker, adopt_seconds: float = 2.0) -> None:
    """Exactly one instance tracks (submits and polls) renders; any instance may accept requests.

    The leader holds an advisory lock on a session of its own; when it dies the lock goes with its
    session and a standby takes over, adopting every unfinished render (also those it never saw).
    """
    while True:
        try:
            async with pool.acquire() as session:
                # Standby: another instance tracks renders; poll its lock.
                while not await session.fetchval(  # noqa: ASYNC110
                    "SELECT pg_try_advisory_lock(hashtext('render-tracker'))"
                ):
                    await asyncio.sleep(0.5)
                tracker.reset()
                log.info("tracking renders", extra={"resumed": await tracker.resume()})
                async with asyncio.TaskGroup() as group:
                    group.create_task(tracker.run())
                    group.create_task(_adopt_forever(tracker, session, adopt_seconds))
        except* Exception as failures:
            log.warning("render tracking interrupted; contending again",
                        extra={"error": "; ".join(repr(e) for e in failures.exceptions)})
        await asyncio.sleep(1)


async def _adopt_forever(tracker: Tracker, session: asyncpg.Connection, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await session.fetchval("SELECT 1")  # the lease's session is alive
        adopted = await tracker.adopt()
        if adopted:
            log.info("adopted renders", extra={"adopted": adopted})


def main() -> None:
    run_service(RenderSettings(), start)


if __name__ == "__main__":
    main()
