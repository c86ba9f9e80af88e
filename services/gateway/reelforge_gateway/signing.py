"""Short-lived signed download URLs: HMAC-SHA256 over job id, variant and expiry (no I/O here)."""

from __future__ import annotations

import hashlib
import hmac
import time


class SignatureInvalid(Exception):
    pass


class SignatureExpired(Exception):
    pass


class UrlSigner:
    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def _mac(self, job_id: str, variant: str, expires: int) -> str:
        message = f"{job_id}\n{variant}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, job_id: str, variant: str, now: float | None = None) -> tuple[int, str]:
        expires = int(now if now is not None else time.time()) + self.ttl_seconds
        return expires, self._mac(job_id, variant, expires)

    def verify(self, job_id: str, variant: str, expires: int, signature: str, now: float | None = None) -> None:
        # Bytes, not str: compare_digest refuses non-ASCII strings, and a URL may carry anything.
        if not hmac.compare_digest(self._mac(job_id, variant, expires).encode(), signature.encode()):
            raise SignatureInvalid
        if expires < (now if now is not None else time.time()):
            raise SignatureExpired
