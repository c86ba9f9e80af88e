"""A real gateway (uvicorn on a free port) over a real PostgreSQL database, without Kafka.

Tests drive a job's lifecycle the way the orchestrator would, by applying JobStatusChanged events
to the gateway's store (the status consumer's own code path).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from reelforge_core import db
from reelforge_core.content import ContentStore
from reelforge_gateway import store
from reelforge_gateway.__main__ import MIGRATIONS, SCHEMA
from reelforge_gateway.api.app import create_app
from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.harness import Gateway

TEST_SECRET_KEY = "gateway-tests-webhook-secret-key-0001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(**overrides: Any) -> GatewaySettings:
    # The streams' fallback re-read is a minute away: a stream that sees a change at once was woken by its NOTIFY.
    # Webhook signing secrets are sealed, as in any deployment that sets a key.
    return GatewaySettings(poll_after_ms=50, **{"stream_fallback_seconds": 60.0,
                                                "webhook_secret_keys": [SecretStr(TEST_SECRET_KEY)], **overrides})


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings()


@pytest.fixture
def gateway(postgres_dsn: str, tmp_path: Path, gateway_settings: GatewaySettings) -> Iterator[Gateway]:
    loop = asyncio.new_event_loop()
    port = free_port()
    content = ContentStore(tmp_path / "content")
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def setup() -> None:
        pool = await db.create_pool(postgres_dsn, SCHEMA, 20)
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        holder["pool"] = pool
        holder["tenant"] = await store.create_tenant(pool, "acme")
        app = holder["app"] = create_app(pool, content, gateway_settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off"))
        holder["server"] = server
        holder["task"] = asyncio.ensure_future(server.serve())

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(setup())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run_loop, daemon=True)
    thread.start()
    ready.wait(30)
    server = holder["server"]
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    tenant_id, key = holder["tenant"]
    gw = Gateway(url=f"http://127.0.0.1:{port}", dsn=postgres_dsn, content=content, api_key=key.plaintext,
                 tenant_id=tenant_id, loop=loop, pool=holder["pool"], secret_box=holder["app"].state.secret_box)
    try:
        yield gw
    finally:
        server.should_exit = True
        async def stopped() -> None:
            await holder["task"]

        gw.run(stopped())
        gw.run(holder["app"].state.notifications.close())  # it holds a pooled connection once a stream began
        gw.run(holder["pool"].close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "sample.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10:duration=1",
         "-pix_fmt", "yuv420p", "-y", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="session")
def sample_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "reference.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:size=64x64", "-frames:v", "1", "-y", str(path)],
        check=True,
    )
    return path
