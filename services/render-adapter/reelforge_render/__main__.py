"""`python -m reelforge_render` runs the render adapter."""

from __future__ import annotations

from pathlib import Path

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
    content = ContentStore(settings.content_dir)
    providers = build_providers(settings, content)
    for provider in providers.values():
        runtime.on_close(provider.close)
    tracker = Tracker(pool, content, providers, workers=settings.tracker_workers, jitter=settings.poll_jitter)
    await tracker.resume()
    runtime.add_task("render-tracker", tracker.run)
    timeouts = {name: config.timeout_seconds for name, config in settings.providers.items()}
    worker = RenderWorker(pool, providers, tracker, timeouts, settings.render_timeout_seconds)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(webhook_router(tracker))
    runtime.http_app = app
    await runtime.consume(CONSUMER, [topics.RENDER_REQUESTED, topics.RENDER_CANCEL_REQUESTED], worker.handle)


def main() -> None:
    run_service(RenderSettings(), start)


if __name__ == "__main__":
    main()
