"""API keys: shown once, stored as a SHA-256 hash, found by a public prefix.

Keys carry 256 bits of randomness, so a fast hash is the right tool (a slow password hash would
only add latency); comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_KEY = re.compile(r"^rfk_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    digest: str


def generate() -> NewKey:
    prefix = secrets.token_hex(5)
    plaintext = f"rfk_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext=plaintext, prefix=prefix, digest=digest(plaintext))


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def prefix_of(plaintext: str) -> str | None:
    match = _KEY.match(plaintext)
    return match.group(1) if match else None


def matches(plaintext: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(plaintext), stored_digest)
