"""The gateway's FastAPI application."""

from __future__ import annotations

import asyncpg
from fastapi import FastAPI

from reelforge_core.asgi_tracing import TracingMiddleware
from reelforge_core.content import ContentStore
from reelforge_gateway.api import jobs, problems
from reelforge_gateway.api.limits import BodySizeLimit


def create_app(pool: asyncpg.Pool, content: ContentStore, max_body_bytes: int) -> FastAPI:
    app = FastAPI(
        title="Reelforge API",
        version="1.0.0",
        description="Submit AI video jobs, follow them, download the finished video. "
        "Errors are RFC 9457 problem+json with a stable `code`.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.pool = pool
    app.state.content = content
    problems.install(app)
    app.include_router(jobs.router)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(TracingMiddleware)
    return app
