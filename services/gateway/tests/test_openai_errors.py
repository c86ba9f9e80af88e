"""Each error of the OpenAI-compatible routes raises the SDK exception class a partner's code catches."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from reelforge_gateway import keys
from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings(rate_limit_per_minute=6, blocked_terms=["counterfeit"])


def _client(gateway: Gateway, key: str) -> OpenAI:
    return OpenAI(api_key=key, base_url=f"{gateway.url}/v1", max_retries=0)


def test_exception_classes(gateway: Gateway) -> None:
    client = _client(gateway, gateway.api_key)
    with pytest.raises(openai.UnprocessableEntityError) as blocked:
        client.videos.create(prompt="A counterfeit watch")
    assert (blocked.value.code, blocked.value.param) == ("prompt_blocked", "prompt")
    first = client.videos.create(prompt="A watch", extra_headers={"Idempotency-Key": "k1"})
    assert client.videos.create(prompt="A watch", extra_headers={"Idempotency-Key": "k1"}).id == first.id
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        client.videos.create(prompt="Another watch", extra_headers={"Idempotency-Key": "k1"})
    assert reused.value.code == "idempotency_key_reused"
    with pytest.raises(openai.RateLimitError) as limited:  # 6 per minute: 4 above, then the bucket runs dry
        for _ in range(5):
            client.videos.list()
    assert limited.value.code == "rate_limited"
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_permission_denied_for_a_read_only_key(gateway: Gateway) -> None:
    key = keys.generate()
    gateway.run(gateway.pool.execute(
        "INSERT INTO api_keys (key_id, tenant_id, prefix, key_hash, scopes) VALUES ($1, $2, $3, $4, $5)",
        "key_" + "1" * 24, gateway.tenant_id, key.prefix, key.digest, ["jobs:read"]))
    reader = _client(gateway, key.plaintext)
    assert list(reader.videos.list()) == []
    with pytest.raises(openai.PermissionDeniedError) as denied:
        reader.videos.create(prompt="A watch")
    assert denied.value.code == "insufficient_scope"
    with pytest.raises(openai.PermissionDeniedError):
        reader.webhooks.create(name="x", url="https://example.com/hook", event_types=["video.completed"])
