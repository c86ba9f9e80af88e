"""Webhook signing secrets sealed at rest: the database never holds a secret the API showed; a sealed secret
opens only for its endpoint and under a configured key; rotating the key reseals every endpoint at start
(old-key and unsealed values alike), and deliveries keep verifying throughout."""

from __future__ import annotations

import pytest
from openai import OpenAI
from standardwebhooks import Webhook

from reelforge_gateway import secret_box
from reelforge_gateway.secret_box import SecretBox, SecretUnreadable
from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.conftest import TEST_SECRET_KEY, make_settings
from services.gateway.tests.harness import Gateway
from services.gateway.tests.test_webhooks import Receiver, _deliver_all

NEW_KEY = "the-next-webhook-secret-key-rotated-in-0002"


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings(webhook_allowed_hosts=["127.0.0.1"])


def test_sealed_for_one_endpoint_under_a_known_key() -> None:
    box = SecretBox([TEST_SECRET_KEY])
    sealed = box.seal("whsec_abc", "whe_1")
    assert sealed.startswith(secret_box.PREFIX) and "abc" not in sealed
    assert box.seal("whsec_abc", "whe_1") != sealed  # a fresh nonce each time
    assert box.open(sealed, "whe_1") == "whsec_abc"
    with pytest.raises(SecretUnreadable, match="does not open for this endpoint"):
        box.open(sealed, "whe_2")
    with pytest.raises(SecretUnreadable, match="not among WEBHOOK_SECRET_KEYS"):
        SecretBox([NEW_KEY]).open(sealed, "whe_1")
    assert SecretBox([NEW_KEY, TEST_SECRET_KEY]).open(sealed, "whe_1") == "whsec_abc"  # old keys still open
    assert box.open("whsec_plain", "whe_1") == "whsec_plain"  # stored before keys were set
    assert SecretBox([]).seal("whsec_abc", "whe_1") == "whsec_abc"
    with pytest.raises(ValueError, match="at least 32"):
        SecretBox(["short"])


def test_stored_sealed_and_resealed_on_key_rotation(gateway: Gateway) -> None:
    receiver = Receiver()
    try:
        client = OpenAI(api_key=gateway.api_key, base_url=f"{gateway.url}/v1", max_retries=0)
        endpoint = client.webhooks.create(name="e", url=receiver.url, event_types=["video.completed"])
        stored = gateway.run(gateway.pool.fetchval(
            "SELECT secret FROM webhook_endpoints WHERE endpoint_id = $1", endpoint.id))
        assert stored.startswith(secret_box.PREFIX) and endpoint.signing_secret not in stored
        rotated = client.webhooks.rotate_secret(endpoint.id, keep_old_secret_active_for_24_hours=True)
        row = gateway.run(gateway.pool.fetchrow(
            "SELECT secret, previous_secret FROM webhook_endpoints WHERE endpoint_id = $1", endpoint.id))
        assert all(value.startswith(secret_box.PREFIX) for value in row)
        assert rotated.signing_secret not in row["secret"] and endpoint.signing_secret not in row["previous_secret"]

        # One endpoint stored before keys were set (in clear), then the operator rotates the key.
        gateway.run(gateway.pool.execute(
            "INSERT INTO webhook_endpoints (endpoint_id, tenant_id, name, url, secret, events)"
            " VALUES ('whe_legacy', $1, 'legacy', $2, 'whsec_bGVnYWN5LXNlY3JldC1ieXRlcw==', '{job.completed}')",
            gateway.tenant_id, receiver.url))
        rotated_box = SecretBox([NEW_KEY, TEST_SECRET_KEY])
        assert gateway.run(secret_box.reseal_all(gateway.pool, rotated_box)) == 2
        assert gateway.run(secret_box.reseal_all(gateway.pool, rotated_box)) == 0  # all current now
        rows = gateway.run(gateway.pool.fetch("SELECT endpoint_id, secret, previous_secret FROM webhook_endpoints"))
        only_new = SecretBox([NEW_KEY])
        opened = {r["endpoint_id"]: (only_new.open(r["secret"], r["endpoint_id"]),
                                     r["previous_secret"] and only_new.open(r["previous_secret"], r["endpoint_id"]))
                  for r in rows}
        assert opened == {endpoint.id: (rotated.signing_secret, endpoint.signing_secret),
                          "whe_legacy": ("whsec_bGVnYWN5LXNlY3JldC1ieXRlcw==", None)}

        # Deliveries are signed with the opened secret (both, during the grace period).
        gateway.secret_box = rotated_box
        gateway.run(gateway.pool.execute(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, tenant_id, event_type, payload)"
            " VALUES ('msg_sealed', $1, $2, 'video.completed', '{\"type\": \"video.completed\"}')",
            endpoint.id, gateway.tenant_id))
        _deliver_all(gateway)
        headers, body, _ = receiver.received[-1]
        for secret in (rotated.signing_secret, endpoint.signing_secret):
            Webhook(secret).verify(body, headers)
    finally:
        receiver.close()


def test_a_secret_under_a_missing_key_fails_its_delivery_clearly(gateway: Gateway) -> None:
    receiver = Receiver()
    try:
        client = OpenAI(api_key=gateway.api_key, base_url=f"{gateway.url}/v1", max_retries=0)
        endpoint = client.webhooks.create(name="e", url=receiver.url, event_types=["video.completed"])
        gateway.run(gateway.pool.execute(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, tenant_id, event_type, payload)"
            " VALUES ('msg_lost_key', $1, $2, 'video.completed', '{}')", endpoint.id, gateway.tenant_id))
        gateway.secret_box = SecretBox([NEW_KEY])  # the key that sealed it is gone
        _deliver_all(gateway, rounds=1)
        row = gateway.run(gateway.pool.fetchrow(
            "SELECT state, last_error FROM webhook_deliveries WHERE delivery_id = 'msg_lost_key'"))
        assert row["state"] == "pending" and "signing secret unreadable" in row["last_error"]
        assert not receiver.received
        assert client.webhooks.retrieve(endpoint.id).signing_secret_hint is not None
    finally:
        receiver.close()
