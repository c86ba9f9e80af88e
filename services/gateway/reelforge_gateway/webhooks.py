"""Webhooks: Standard Webhooks signatures, the SSRF guard, and durable delivery with backoff.

Deliveries are rows written in the same transaction as the status change they announce, so none
is lost or duplicated; a worker sends due rows (FOR UPDATE SKIP LOCKED, so several gateway
instances share the work) and reschedules failures with exponential backoff until `max_attempts`,
after which a delivery is `dead` (listed, and replayable).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import asyncpg
import httpx

from reelforge_core.ssrf import UnsafeURL, URLGuard, pinned_client
from reelforge_gateway import metrics
from reelforge_gateway.secret_box import SecretBox, SecretUnreadable

log = logging.getLogger(__name__)

EventType = Literal["job.completed", "job.failed", "job.cancelled", "job.expired", "job.progress", "video.completed",
                    "video.failed", "billing.budget_alert", "batch.completed"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
DEFAULT_EVENTS: tuple[EventType, ...] = ("job.completed", "job.failed", "job.cancelled")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value per the Standard Webhooks spec (v1, HMAC-SHA256)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(signing_secrets: list[str], message_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers; one signature per secret (space-separated), so a receiver still holding
    the previous secret after a rotation keeps verifying until that secret expires."""
    timestamp = int(time.time())
    signatures = " ".join(sign(secret, message_id, timestamp, body) for secret in signing_secrets)
    return {"content-type": "application/json", "webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures}


def active_secrets(endpoint: asyncpg.Record, box: SecretBox) -> list[str]:
    """The endpoint's secret, plus the previous one while a rotation's grace period lasts (opened by `box`;
    SecretUnreadable if sealed under a key not configured)."""
    expires = endpoint["previous_secret_expires"]
    keep_previous = endpoint["previous_secret"] and expires is not None and expires.timestamp() > time.time()
    stored = [endpoint["secret"], endpoint["previous_secret"]] if keep_previous else [endpoint["secret"]]
    return [box.open(secret, endpoint["endpoint_id"]) for secret in stored]


UrlForbidden = UnsafeURL  # what the webhook endpoint API reports as `webhook_url_forbidden`


def url_guard(allowed_hosts: Iterable[str]) -> URLGuard:
    """The SSRF guard for partner webhook URLs (reelforge_core.ssrf): http(s), public addresses only unless an
    operator allowlisted the host, host:port or network; plain http is allowed (the partner's choice)."""
    return URLGuard(allowed_hosts, require_https=False)


def delivery_client(guard: URLGuard, timeout: float) -> httpx.AsyncClient:
    """Connects only to the address the guard checked (DNS pinning). No redirects: a receiver must not bounce a
    signed delivery elsewhere."""
    return pinned_client(guard, timeout=timeout, follow_redirects=False)


@dataclass(frozen=True)
class Backoff:
    base_seconds: float
    max_seconds: float
    max_attempts: int

    def delay(self, attempts: int) -> float:
        return float(min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))


def event_payload(event_type: str, job: Mapping[str, Any], at: int) -> dict[str, Any]:
    if event_type.startswith("video."):  # OpenAI's webhook event shape
        return {"id": f"evt_{secrets.token_hex(12)}", "object": "event", "created_at": at, "type": event_type,
                "data": {"id": job["job_id"]}}
    data = {"id": job["job_id"], "status": job["state"], "progress": job["progress"],
            "metadata": json.loads(job["metadata"]),
            "error": {"code": job["error_code"], "message": job["error_message"]} if job["error_code"] else None}
    return {"id": f"evt_{secrets.token_hex(12)}", "object": "event", "type": event_type, "created_at": at,
            "data": data}


def event_types_for(state: str) -> tuple[str, ...]:
    if state not in ("completed", "failed", "cancelled", "expired"):
        return ("job.progress",)  # admitted, rendering, postprocessing: only for endpoints that ask
    return (f"job.{state}", "video.completed" if state == "completed" else "video.failed")


def sample_event(event_type: str) -> dict[str, Any]:
    """What `POST /v1/webhook_endpoints/{id}/test` sends: an event of that type about a made-up job."""
    state = event_type.rpartition(".")[2]
    state = "rendering" if state == "progress" else state
    failed = state in ("failed", "cancelled", "expired")
    job = {"job_id": "job_" + "0" * 24, "state": state, "progress": 100 if state == "completed" else 40,
           "metadata": '{"test": "true"}', "error_code": "test" if failed else None,
           "error_message": "A test event" if failed else None}
    return event_payload(event_type, job, int(time.time()))


async def send_once(client: httpx.AsyncClient, url: str, signing_secrets: list[str], message_id: str,
                    payload: dict[str, Any]) -> int:
    """One signed POST, no retry (the test call); returns the receiver's HTTP status. `client` is a
    `delivery_client`: it refuses (UnsafeURL) a URL the guard refuses."""
    body = json.dumps(payload).encode()
    response = await client.post(url, content=body, headers=signed_headers(signing_secrets, message_id, body))
    return response.status_code


async def enqueue_for_job(conn: asyncpg.Connection, job: asyncpg.Record) -> int:
    """Inside the status update's transaction: one delivery per subscribed endpoint."""
    types = event_types_for(job["state"])
    endpoints = await conn.fetch(
        "SELECT endpoint_id, events FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL"
        " AND events && $2::text[]",
        job["tenant_id"], list(types),
    )
    now = int(time.time())
    count = 0
    for endpoint in endpoints:
        for event_type in types:
            if event_type in endpoint["events"]:
                await conn.execute(
                    "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, tenant_id, event_type, payload)"
                    " VALUES ($1, $2, $3, $4, $5::json)",
                    f"msg_{secrets.token_hex(12)}", endpoint["endpoint_id"], job["tenant_id"], event_type,
                    json.dumps(event_payload(event_type, job, now)),
                )
                count += 1
    return count


async def enqueue_event(conn: asyncpg.Connection, tenant_id: str, event_type: str, data: dict[str, Any]) -> int:
    """Inside the caller's transaction: one delivery of a non-job event per subscribed endpoint."""
    endpoints = await conn.fetch(
        "SELECT endpoint_id FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL AND $2 = ANY(events)",
        tenant_id, event_type,
    )
    for endpoint in endpoints:
        payload = {"id": f"evt_{secrets.token_hex(12)}", "type": event_type, "created_at": int(time.time()),
                   "data": data}
        await conn.execute(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, tenant_id, event_type, payload)"
            " VALUES ($1, $2, $3, $4, $5::json)",
            f"msg_{secrets.token_hex(12)}", endpoint["endpoint_id"], tenant_id, event_type, json.dumps(payload),
        )
    return len(endpoints)


async def deliver_due(pool: asyncpg.Pool, client: httpx.AsyncClient, backoff: Backoff, box: SecretBox,
                      batch: int = 20, lease_seconds: float = 60) -> int:
    """Sends one batch of due deliveries; returns how many were attempted."""
    async with pool.acquire() as conn, conn.transaction():
        due = await conn.fetch(
            "SELECT d.delivery_id, d.payload, d.attempts, endpoint_id, e.url, e.secret, e.previous_secret,"
            " e.previous_secret_expires FROM webhook_deliveries d"
            " JOIN webhook_endpoints e USING (endpoint_id)"
            " WHERE d.state = 'pending' AND d.next_attempt_at <= now()"
            " ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED",
            batch,
        )
        if due:  # lease them, so a crash mid-send only delays a retry
            await conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $2)"
                " WHERE delivery_id = ANY($1::text[])",
                [row["delivery_id"] for row in due], lease_seconds,
            )
    await asyncio.gather(*[_attempt(pool, client, backoff, box, row) for row in due])
    return len(due)


async def _attempt(pool: asyncpg.Pool, client: httpx.AsyncClient, backoff: Backoff, box: SecretBox,
                   row: asyncpg.Record) -> None:
    body = row["payload"].encode()
    status: int | None = None
    error: str | None = None
    try:
        headers = signed_headers(active_secrets(row, box), row["delivery_id"], body)
        # The client checks the URL again (DNS may have changed) and connects to the checked address.
        response = await client.post(row["url"], content=body, headers=headers)
        status = response.status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except UrlForbidden as exc:
        error = f"forbidden: {exc}"
    except SecretUnreadable as exc:  # retried: the operator may put the key back
        error = f"signing secret unreadable: {exc}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    attempts = row["attempts"] + 1
    if error is None:
        await pool.execute(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = $2, last_status = $3, last_error = NULL,"
            " delivered_at = now() WHERE delivery_id = $1",
            row["delivery_id"], attempts, status,
        )
        metrics.WEBHOOK_ATTEMPTS.labels("delivered").inc()
        return
    dead = attempts >= backoff.max_attempts
    metrics.WEBHOOK_ATTEMPTS.labels("dead" if dead else "retry").inc()
    await pool.execute(
        "UPDATE webhook_deliveries SET state = $2, attempts = $3, last_status = $4, last_error = $5,"
        " next_attempt_at = now() + make_interval(secs => $6) WHERE delivery_id = $1",
        row["delivery_id"], "dead" if dead else "pending", attempts, status, error, backoff.delay(attempts),
    )
    log.info("webhook delivery failed", extra={"delivery_id": row["delivery_id"], "attempts": attempts,
                                                "error": error, "dead": dead})
