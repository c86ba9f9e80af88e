"""`python -m reelforge_render` runs the render adapter."""

from __future__ import annotations

from pathlib import Path

from reelforge_core import topics
from reelforge_core.content import ContentStore
from reelforge_core.service import ServiceRuntime, run_service
from reelforge_render.providers.animatic import AnimaticProvider
from reelforge_render.providers.base import Provider
from reelforge_render.settings import RenderSettings
from reelforge_render.worker import CONSUMER, RenderWorker

SCHEMA = "render"
MIGRATIONS = Path(__file__).parent / "migrations"


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, RenderSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS)
    providers: dict[str, Provider] = {
        "animatic": AnimaticProvider(settings.animatic_max_pixels, settings.render_timeout_seconds),
    }
    worker = RenderWorker(pool, ContentStore(settings.content_dir), providers)
    await runtime.consume(CONSUMER, [topics.RENDER_REQUESTED], worker.handle)


def main() -> None:
    run_service(RenderSettings(), start)


if __name__ == "__main__":
    main()
