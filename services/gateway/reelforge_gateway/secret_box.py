"""Webhook signing secrets sealed at rest (AES-256-GCM) under the operator's keys.

A signing secret must be read back to sign each delivery, so it cannot be hashed like an API key; it is
encrypted instead, with the endpoint id as associated data (a sealed secret copied onto another endpoint
does not open). The keys come from `WEBHOOK_SECRET_KEYS` (a JSON list of strings of at least 32
characters): the first seals, every one opens, so a key is rotated by putting the new one first; at start
the gateway reseals every secret not sealed under the first key (`reseal_all`). A stored value names its key
by a short id: `sealed:v1:<key id>:<base64 nonce + ciphertext>`. Without keys, secrets are stored as given
(the service warns at start), and a value written that way still opens once keys are set.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

PREFIX = "sealed:v1:"
MIN_KEY_CHARS = 32


class SecretUnreadable(Exception):
    """A sealed secret whose key is not configured, or that does not belong to its endpoint."""


class SecretBox:
    @classmethod
    def of(cls, keys: Sequence[SecretStr]) -> SecretBox:
        return cls([key.get_secret_value() for key in keys])

    def __init__(self, keys: Sequence[str]) -> None:
        for key in keys:
            if len(key) < MIN_KEY_CHARS:
                raise ValueError(f"a webhook secret key has at least {MIN_KEY_CHARS} characters")
        derived = [hashlib.sha256(b"reelforge webhook secrets\0" + key.encode()).digest() for key in keys]
        self._keys = {hashlib.sha256(k).hexdigest()[:8]: AESGCM(k) for k in derived}
        self._sealing = next(iter(self._keys), None)

    @property
    def seals(self) -> bool:
        return self._sealing is not None

    def seal(self, secret: str, endpoint_id: str) -> str:
        if self._sealing is None:
            return secret
        nonce = os.urandom(12)
        sealed = self._keys[self._sealing].encrypt(nonce, secret.encode(), endpoint_id.encode())
        return f"{PREFIX}{self._sealing}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, endpoint_id: str) -> str:
        if not stored.startswith(PREFIX):
            return stored
        key_id, _, payload = stored.removeprefix(PREFIX).partition(":")
        aead = self._keys.get(key_id)
        if aead is None:
            raise SecretUnreadable(f"sealed under key {key_id}, which is not among WEBHOOK_SECRET_KEYS")
        raw = base64.b64decode(payload)
        try:
            return aead.decrypt(raw[:12], raw[12:], endpoint_id.encode()).decode()
        except InvalidTag:
            raise SecretUnreadable("the sealed secret does not open for this endpoint") from None

    def current(self, stored: str | None) -> bool:
        """Whether `stored` is as this box would write it now (sealed under the first key, or no keys)."""
        if stored is None:
            return True
        if self._sealing is None:
            return not stored.startswith(PREFIX)
        return stored.startswith(f"{PREFIX}{self._sealing}:")


async def reseal_all(pool: asyncpg.Pool, box: SecretBox) -> int:
    """Seals (under the first key) every endpoint secret that is not yet; returns how many endpoints changed.
    A secret sealed under a key no longer configured is left as it is (its deliveries fail with that reason)."""
    changed = 0
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT endpoint_id, secret, previous_secret FROM webhook_endpoints")
        for row in rows:
            if box.current(row["secret"]) and box.current(row["previous_secret"]):
                continue
            try:
                secret = box.seal(box.open(row["secret"], row["endpoint_id"]), row["endpoint_id"])
                previous = (box.seal(box.open(row["previous_secret"], row["endpoint_id"]), row["endpoint_id"])
                            if row["previous_secret"] is not None else None)
            except SecretUnreadable:
                continue
            # Only if unchanged meanwhile (a rotation on another instance wins).
            done = await conn.execute(
                "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE endpoint_id = $1"
                " AND secret = $4 AND previous_secret IS NOT DISTINCT FROM $5",
                row["endpoint_id"], secret, previous, row["secret"], row["previous_secret"])
            changed += done.endswith(" 1")
    return changed
