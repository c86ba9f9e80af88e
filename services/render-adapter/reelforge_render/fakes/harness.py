"""A real render adapter core (Postgres in-flight set, tracker, outbox) against fake providers in-process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from fastapi import FastAPI, Request, Response

from reelforge.jobs.v1 import jobs_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import db, topics
from reelforge_core.content import ContentStore
from reelforge_core.kafka import Event
from reelforge_render.__main__ import MIGRATIONS, SCHEMA
from reelforge_render.providers.base import Provider
from reelforge_render.tracker import Tracker
from reelforge_render.worker import RenderWorker

SMALL = {"width": 320, "height": 180}


def spec(prompt: str = "A teapot on a table.", seconds: float = 4, model: str = "sora-2",
         **kw: object) -> jobs_pb2.JobSpec:
    fields = {**SMALL, **kw}
    return jobs_pb2.JobSpec(prompt=prompt, seconds=seconds, model=model, **fields)  # type: ignore[arg-type]


@dataclass
class Adapter:
    pool: asyncpg.Pool
    tracker: Tracker
    worker: RenderWorker
    content: ContentStore
    _offset: int = 0

    async def request(self, render_id: str, provider: str, job_spec: jobs_pb2.JobSpec) -> None:
        message = render_pb2.RenderRequested(render_id=render_id, job_id=render_id.split("/")[0], tenant_id="t1",
                                             attempt=1, provider=provider, spec=job_spec)
        await self._deliver(topics.RENDER_REQUESTED, message.SerializeToString())

    async def cancel(self, render_id: str, provider: str) -> None:
        message = render_pb2.RenderCancelRequested(render_id=render_id, job_id=render_id.split("/")[0],
                                                   tenant_id="t1", provider=provider)
        await self._deliver(topics.RENDER_CANCEL_REQUESTED, message.SerializeToString())

    async def provider_event(self, provider: str, body: bytes, delivery_id: str = "d1") -> None:
        """A provider webhook as the gateway hands it on once verified (render.v1.provider-event)."""
        message = render_pb2.ProviderEvent(provider=provider, delivery_id=delivery_id, body=body)
        await self._deliver(topics.RENDER_PROVIDER_EVENT, message.SerializeToString())

    async def _deliver(self, topic: str, value: bytes) -> None:
        self._offset += 1
        await self.worker.handle(Event(topic=topic, partition=0, offset=self._offset, key=None, value=value,
                                       headers={"event-id": f"e{self._offset}"}))

    async def result(self, render_id: str, within: float = 20.0) -> render_pb2.RenderResult:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            rows = await self.pool.fetch("SELECT payload FROM outbox WHERE topic = $1", topics.RENDER_RESULT)
            for row in rows:
                result = render_pb2.RenderResult()
                result.ParseFromString(row["payload"])
                if result.render_id == render_id:
                    return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"no result for {render_id} within {within}s")

    async def results(self) -> list[render_pb2.RenderResult]:
        out = []
        for row in await self.pool.fetch("SELECT payload FROM outbox WHERE topic = $1", topics.RENDER_RESULT):
            result = render_pb2.RenderResult()
            result.ParseFromString(row["payload"])
            out.append(result)
        return out


def webhook_receiver(provider: str) -> FastAPI:
    """An HTTP endpoint (POST /hook) standing in for the gateway's /v1/provider-webhooks/{provider}, whose
    signature checks the gateway's tests cover: it hands each delivery's raw body to `app.state.adapter`."""
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        target: Adapter = app.state.adapter
        await target.provider_event(provider, await request.body(), request.headers.get("webhook-id", ""))
        return Response(status_code=202)

    return app


@contextlib.asynccontextmanager
async def adapter(dsn: str, content_dir: Path, providers: Mapping[str, Provider], render_timeout: float = 30.0,
                  workers: int = 16, backoff_base: float = 0.05, pool: asyncpg.Pool | None = None,
                  ) -> AsyncIterator[Adapter]:
    own_pool = pool is None
    if pool is None:
        pool = await db.create_pool(dsn, SCHEMA, 5)
        await db.migrate(pool, SCHEMA, MIGRATIONS)
    content = ContentStore(content_dir)
    tracker = Tracker(pool, content, providers, workers=workers, backoff_base=backoff_base)
    await tracker.resume()
    worker = RenderWorker(pool, providers, tracker, {}, render_timeout)
    task = asyncio.create_task(tracker.run())
    try:
        yield Adapter(pool, tracker, worker, content)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for provider in providers.values():
            await provider.close()
        if own_pool:
            await pool.close()


async def fake_stats(base_url: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        return dict((await client.get(f"{base_url}/_fake/stats")).json())


async def fake_submissions(base_url: str) -> dict[str, int]:
    """Jobs the fake created per submission key (our render id)."""
    async with httpx.AsyncClient() as client:
        return dict((await client.get(f"{base_url}/_fake/submissions")).json()["jobs_by_key"])


async def set_behaviour(base_url: str, **changes: object) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{base_url}/_fake/behaviour", json=changes)).raise_for_status()
