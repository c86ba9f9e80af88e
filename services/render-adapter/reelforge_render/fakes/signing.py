"""How the fake providers sign their webhook deliveries: each provider's real scheme, so the gateway's
verifiers are tested against what the providers really send.

- Standard Webhooks (Replicate: https://replicate.com/docs/topics/webhooks/verify-webhook; OpenAI:
  https://platform.openai.com/docs/guides/webhooks): webhook-id, webhook-timestamp, webhook-signature
  `v1,<base64 HMAC-SHA256(base64-decoded whsec_ secret, "{id}.{timestamp}.{body}")>`.
- WaveSpeedAI (https://wavespeed.ai/docs/docs-api/verifying_webhook): the same headers with
  `v3,<hex HMAC-SHA256(secret without whsec_, not decoded, same content)>`.
- fal (https://docs.fal.ai/model-apis/model-endpoints/webhooks): X-Fal-Webhook-Request-Id, -User-Id,
  -Timestamp, -Signature = hex ED25519 over "request id\\nuser id\\ntimestamp\\nsha256 hex of the body"; the
  public keys are a JWKS (OKP/Ed25519, `x` base64url) that fal serves at a well-known URL (the fake at
  /.well-known/jwks.json).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# The fakes' default signing secret (tests configure the gateway with it); any whsec_ + base64 works.
DEFAULT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"reelforge-fake-provider-secret!!").decode()


def standard_headers(secret: str, body: bytes, message_id: str | None = None) -> dict[str, str]:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": message_id, "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}


def wavespeed_headers(secret: str, body: bytes) -> dict[str, str]:
    message_id = uuid.uuid4().hex[:25]
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.removeprefix("whsec_").encode(), f"{message_id}.{timestamp}.".encode() + body,
                      hashlib.sha256).hexdigest()
    return {"webhook-id": message_id, "webhook-timestamp": timestamp, "webhook-signature": f"v3,{digest}"}


class FalSigner:
    def __init__(self, user_id: str = "fake-fal-user") -> None:
        self._key = Ed25519PrivateKey.generate()
        self.user_id = user_id

    def jwks(self) -> dict[str, Any]:
        raw = self._key.public_key().public_bytes_raw()
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                          "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}]}

    def headers(self, request_id: str, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        message = "\n".join([request_id, self.user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
        return {"x-fal-webhook-request-id": request_id, "x-fal-webhook-user-id": self.user_id,
                "x-fal-webhook-timestamp": timestamp, "x-fal-webhook-signature": self._key.sign(message).hex()}
