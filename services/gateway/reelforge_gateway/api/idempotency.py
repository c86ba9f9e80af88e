"""The Idempotency-Key header: which requests count as "the same" (payment-API semantics)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Request

from reelforge_gateway.api.problems import Problem
from reelforge_gateway.store import Idempotency

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255


def from_request(request: Request, canonical_body: Any) -> Idempotency | None:
    """The key and a fingerprint of route + parsed body (so key order or whitespace do not matter)."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    return for_request(key, request.method, request.url.path, canonical_body)


def for_request(key: str, method: str, path: str, canonical_body: Any, param: str = HEADER) -> Idempotency:
    """The key for a request to `method path`; the gRPC CreateJob uses POST /v1/jobs, so a key is shared."""
    key = key.strip()
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise Problem(400, "invalid_idempotency_key", "Invalid idempotency key",
                      f"Use 1 to {MAX_KEY_CHARS} printable characters, e.g. a UUID", param=param)
    fingerprint = json.dumps([method, path, canonical_body], sort_keys=True, default=str)
    return Idempotency(key=key, request_hash=hashlib.sha256(fingerprint.encode()).hexdigest())


def reused(key: Idempotency) -> Problem:
    return Problem(422, "idempotency_key_reused", "Idempotency-Key reused with a different request",
                   f"The key {key.key!r} was first used with a different body or route; use a new key",
                   param=HEADER)
