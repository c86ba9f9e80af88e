"""Verifying render providers' webhook deliveries, each by its provider's own signing scheme.

- `standard` (Standard Webhooks, https://www.standardwebhooks.com/): Replicate
  (https://replicate.com/docs/topics/webhooks/verify-webhook) and OpenAI
  (https://platform.openai.com/docs/guides/webhooks). Headers webhook-id, webhook-timestamp (Unix seconds),
  webhook-signature: space-separated `v1,<base64 HMAC-SHA256>` over `{id}.{timestamp}.{raw body}`, keyed by the
  base64-decoded part of the `whsec_` secret.
- `wavespeed` (https://wavespeed.ai/docs/docs-api/verifying_webhook): the same three headers, but the
  signature is `v3,<hex HMAC-SHA256>` over the same content, keyed by the secret with `whsec_` removed and
  NOT base64-decoded; at most 300 s old.
- `fal` (https://docs.fal.ai/model-apis/model-endpoints/webhooks): headers X-Fal-Webhook-Request-Id,
  -User-Id, -Timestamp and -Signature (hex ED25519) over the lines request id, user id, timestamp and the
  hex SHA-256 of the raw body; public keys from fal's JWKS URL (`keys[].x`, base64url), within 300 s.

A verifier returns the delivery's id (the replay key) or raises Refused (401 bad signature, 400 anything
else wrong with the headers or the timestamp).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, Field, SecretStr

MAX_BODY_BYTES = 1024 * 1024
JWKS_TTL_SECONDS = 24 * 3600  # fal: cache its keys at most a day
JWKS_REFRESH_SECONDS = 60.0  # an unknown signature refetches the keys at most this often


class ProviderWebhookConfig(BaseModel):
    """One provider's webhook settings (REELFORGE_GATEWAY_PROVIDER_WEBHOOKS, JSON by our provider name)."""

    scheme: Literal["standard", "wavespeed", "fal"]
    # The signing secret (whsec_...) of `standard` and `wavespeed`, from an env var or a mounted file.
    secret_env: str | None = None
    secret_file: Path | None = None
    jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"  # fal only
    tolerance_seconds: int = Field(default=300, ge=1, le=3600)

    def secret(self) -> SecretStr:
        if self.secret_file is not None:
            return SecretStr(self.secret_file.read_text().strip())
        if self.secret_env and os.environ.get(self.secret_env):
            return SecretStr(os.environ[self.secret_env])
        raise ValueError(f"the {self.scheme} scheme needs secret_env or secret_file set")


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class Verifier(Protocol):
    async def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """The delivery id, once the delivery is proven to come from the provider; raises Refused."""


def _require(headers: Mapping[str, str], *names: str) -> list[str]:
    values = [headers.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise Refused(400, "webhook_headers_missing", f"missing header(s): {', '.join(missing)}")
    if any(len(value) > 4096 for value in values):
        raise Refused(400, "webhook_headers_invalid", "a signature header is too long")
    return values


def _check_timestamp(value: str, tolerance: int) -> None:
    try:
        timestamp = int(value)
    except ValueError:
        raise Refused(400, "webhook_timestamp_invalid", "the timestamp is not Unix seconds") from None
    if abs(time.time() - timestamp) > tolerance:
        raise Refused(400, "webhook_timestamp_out_of_tolerance",
                      f"the delivery's timestamp is more than {tolerance} s away from now")


def _signatures(header: str, version: str) -> list[str]:
    return [part.split(",", 1)[1] for part in header.split() if part.startswith(version + ",")]


class StandardWebhooks:
    """Replicate and OpenAI (Standard Webhooks v1)."""

    def __init__(self, secret: str, tolerance: int) -> None:
        try:
            self._key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from exc
        self._tolerance = tolerance

    async def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        msg_id, timestamp, signature = _require(headers, "webhook-id", "webhook-timestamp", "webhook-signature")
        _check_timestamp(timestamp, self._tolerance)
        expected = base64.b64encode(
            hmac.new(self._key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()).decode()
        if not any(hmac.compare_digest(expected, given) for given in _signatures(signature, "v1")):
            raise Refused(401, "webhook_signature_invalid", "no valid v1 signature")
        return msg_id


class WaveSpeedWebhooks:
    def __init__(self, secret: str, tolerance: int) -> None:
        self._key = secret.removeprefix("whsec_").encode()
        self._tolerance = tolerance

    async def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        msg_id, timestamp, signature = _require(headers, "webhook-id", "webhook-timestamp", "webhook-signature")
        _check_timestamp(timestamp, self._tolerance)
        expected = hmac.new(self._key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not any(hmac.compare_digest(expected, given.lower()) for given in _signatures(signature, "v3")):
            raise Refused(401, "webhook_signature_invalid", "no valid v3 signature")
        return msg_id


class FalWebhooks:
    def __init__(self, jwks_url: str, tolerance: int, client: httpx.AsyncClient) -> None:
        self._url = jwks_url
        self._tolerance = tolerance
        self._client = client
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at = -1e9

    async def _load_keys(self) -> None:
        response = await self._client.get(self._url)
        response.raise_for_status()
        keys = []
        for jwk in response.json().get("keys", []):
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and isinstance(jwk.get("x"), str):
                raw = base64.urlsafe_b64decode(jwk["x"].rstrip("=") + "=" * (-len(jwk["x"].rstrip("=")) % 4))
                keys.append(Ed25519PublicKey.from_public_bytes(raw))
        self._keys, self._fetched_at = keys, time.monotonic()

    def _verified(self, signature: bytes, message: bytes) -> bool:
        for key in self._keys:
            try:
                key.verify(signature, message)
                return True
            except InvalidSignature:
                continue
        return False

    async def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        request_id, user_id, timestamp, signature_hex = _require(
            headers, "x-fal-webhook-request-id", "x-fal-webhook-user-id", "x-fal-webhook-timestamp",
            "x-fal-webhook-signature")
        _check_timestamp(timestamp, self._tolerance)
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise Refused(401, "webhook_signature_invalid", "the signature is not hex") from None
        message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
        age = time.monotonic() - self._fetched_at
        try:
            if age > JWKS_TTL_SECONDS:
                await self._load_keys()
            ok = self._verified(signature, message)
            if not ok and age > JWKS_REFRESH_SECONDS:  # fal may have rotated its keys
                await self._load_keys()
                ok = self._verified(signature, message)
        except (httpx.HTTPError, ValueError) as exc:
            raise Refused(503, "webhook_keys_unavailable", f"fal's public keys could not be read: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if not ok:
            raise Refused(401, "webhook_signature_invalid", "the ED25519 signature does not verify")
        # fal retries a delivery with the same request id; the timestamp tells the attempts apart.
        return f"{request_id}@{timestamp}"


def build_verifier(config: ProviderWebhookConfig, client: httpx.AsyncClient) -> Verifier:
    if config.scheme == "fal":
        return FalWebhooks(config.jwks_url, config.tolerance_seconds, client)
    secret = config.secret().get_secret_value()
    if config.scheme == "wavespeed":
        return WaveSpeedWebhooks(secret, config.tolerance_seconds)
    return StandardWebhooks(secret, config.tolerance_seconds)
