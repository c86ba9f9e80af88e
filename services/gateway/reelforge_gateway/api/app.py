"""The gateway's FastAPI application."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from reelforge_core.asgi_tracing import TracingMiddleware
from reelforge_core.content import ContentStore
from reelforge_core.listen import Listener
from reelforge_gateway import follow, key_changes
from reelforge_gateway.api import (
    admin,
    batches,
    downloads,
    jobs,
    problems,
    provider_webhooks,
    qc,
    templates,
    video_characters,
    video_derivatives,
    videos,
    webhook_endpoints,
)
from reelforge_gateway.api import usage as usage_api
from reelforge_gateway.api.auth import Gatekeeper, KeyCache, Limits
from reelforge_gateway.api.fast_path import FastJobs
from reelforge_gateway.api.limits import BodySizeLimit
from reelforge_gateway.api.ratelimit import RateLimitHeaders, SharedRateLimiter
from reelforge_gateway.billing_client import BillingClient
from reelforge_gateway.group_commit import GroupCommit
from reelforge_gateway.job_reads import JobReader
from reelforge_gateway.moderation import Moderator
from reelforge_gateway.secret_box import SecretBox
from reelforge_gateway.settings import GatewaySettings
from reelforge_gateway.signing import UrlSigner
from reelforge_gateway.tenancy import KEY_CHANGES


def create_app(pool: asyncpg.Pool, content: ContentStore, settings: GatewaySettings) -> FastAPI:
    app = FastAPI(
        title="Reelforge API",
        version="1.0.0",
        description="Submit AI video jobs, follow them, download the finished video. "
        "Errors are RFC 9457 problem+json with a stable `code`.",
        docs_url="/docs",
        redoc_url=None,
        # The server span is TracingMiddleware's (as in every service); the framework's own would be a
        # second span per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.pool = pool
    app.state.content = content
    app.state.settings = settings
    app.state.limiter = SharedRateLimiter(pool)
    app.state.moderator = Moderator(settings.blocked_terms)
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.secret_box = SecretBox.of(settings.webhook_secret_keys)
    app.state.gatekeeper = Gatekeeper(pool, app.state.key_cache, app.state.limiter, Limits(
        settings.rate_limit_per_minute, settings.tenant_rate_limit_per_minute, settings.tenant_max_concurrent_jobs,
        settings.tenant_max_backlog_jobs))
    app.state.group_commit = GroupCommit(pool)
    app.state.job_reader = JobReader(pool, cache_entries=settings.status_cache_entries,
                                     cache_seconds=settings.status_cache_seconds)
    # The process's one LISTEN connection: gRPC Watch's wake-ups and the key cache's invalidations. The
    # service starts it; otherwise the first Watch does (and until it runs the key cache is off).
    app.state.notifications = Listener(pool, [follow.CHANNEL, KEY_CHANGES])
    key_changes.follow(app.state.notifications, app.state.key_cache)
    app.state.job_reader.cache.follow(app.state.notifications, follow.CHANNEL)
    app.state.billing = (BillingClient(settings.billing_target, operator_token=settings.billing_operator_token)
                         if settings.billing_target else None)
    secret = settings.download_signing_secret
    # Without a configured secret, URLs are signed with a per-process key (fine for one instance).
    app.state.signer = UrlSigner(secret.get_secret_value().encode() if secret else secrets.token_bytes(32),
                                 settings.download_url_ttl_seconds)
    problems.install(app)
    app.include_router(jobs.router)
    app.include_router(qc.router)
    app.include_router(downloads.router)
    app.include_router(videos.router)
    app.include_router(video_derivatives.router)
    app.include_router(video_characters.router)
    app.include_router(webhook_endpoints.router)
    app.include_router(webhook_endpoints.event_types_router)
    app.include_router(admin.router)
    app.include_router(batches.router)
    app.include_router(templates.router)
    app.include_router(provider_webhooks.router)
    # fal's public keys (JWKS) are read with this client; closed with the app.
    app.state.provider_webhook_client = httpx.AsyncClient(timeout=10, follow_redirects=False)
    app.state.provider_verifiers = provider_webhooks.build_verifiers(settings, app.state.provider_webhook_client)
    if settings.billing_target:  # without billing there is no usage, invoice or balance API to offer
        app.include_router(usage_api.router)
    app.add_middleware(FastJobs, api=app)  # innermost: inside the body limit and the rate-limit headers
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes,
                       upload_paths=("/v1/videos", *video_derivatives.UPLOAD_PATHS,
                                                   *video_characters.UPLOAD_PATHS),
                       path_limits={"/v1/batches": settings.batch_max_bytes,
                                    **provider_webhooks.body_limits(settings)})
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(TracingMiddleware)
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Adds the problem+json schema the native routes' error responses refer to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ProblemDetails"] = problems.ProblemDetails.model_json_schema()
            components["InputReferenceObject"] = videos.InputReferenceObject.model_json_schema()
            components["VideoReference"] = video_derivatives.VideoReference.model_json_schema()
            batches.document(schema)
            templates.document(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
