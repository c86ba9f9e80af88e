"""`python -m reelforge_postprocess` runs the postprocess service."""

from __future__ import annotations

from pathlib import Path

from reelforge_core import topics
from reelforge_core.content import ContentStore
from reelforge_core.service import ServiceRuntime, run_service
from reelforge_postprocess.settings import PostprocessSettings
from reelforge_postprocess.worker import CONSUMER, PostprocessWorker

SCHEMA = "postprocess"
MIGRATIONS = Path(__file__).parent / "migrations"


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, PostprocessSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS)
    worker = PostprocessWorker(
        pool,
        ContentStore(settings.content_dir, min_free_bytes=settings.content_min_free_bytes),
        settings.finish_timeout_seconds,
        settings.x264_preset,
        settings.x264_crf,
    )
    await runtime.consume(CONSUMER, [topics.POSTPROCESS_REQUESTED], worker.handle)


def main() -> None:
    run_service(PostprocessSettings(), start)


if __name__ == "__main__":
    main()
