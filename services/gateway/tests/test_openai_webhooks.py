"""The official `openai` SDK's `client.webhooks` against /v1/webhook_endpoints (real server, real Postgres):
endpoint lifecycle, secret rotation with a grace period, the test call, progress events, and deliveries
that `client.webhooks.unwrap` and `standardwebhooks` both accept."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI
from standardwebhooks import Webhook

from reelforge_gateway.settings import GatewaySettings
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway
from services.gateway.tests.test_webhooks import Receiver, _deliver_all


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings(webhook_allowed_hosts=["127.0.0.1"])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(api_key=gateway.api_key, base_url=f"{gateway.url}/v1", max_retries=0)


def test_endpoint_lifecycle(client: OpenAI, receiver: Receiver) -> None:
    created = client.webhooks.create(name="orders", url=receiver.url, event_types=["video.completed"])
    assert created.object == "webhook_endpoint" and created.signing_secret.startswith("whsec_")
    assert created.signing_secret_hint is not None and created.signing_secret.endswith(created.signing_secret_hint[-4:])
    assert (created.name, created.url, created.event_types) == ("orders", receiver.url, ["video.completed"])
    fetched = client.webhooks.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump(exclude={"signing_secret"})
    updated = client.webhooks.update(created.id, name="orders-v2", event_types=["video.completed", "video.failed"])
    assert (updated.name, updated.event_types, updated.url) == ("orders-v2", ["video.completed", "video.failed"],
                                                                receiver.url)
    rotated = client.webhooks.rotate_secret(created.id)
    assert rotated.signing_secret != created.signing_secret
    deleted = client.webhooks.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "webhook_endpoint.deleted")
    with pytest.raises(openai.NotFoundError) as gone:
        client.webhooks.retrieve(created.id)
    assert gone.value.code == "webhook_endpoint_not_found"


def test_list_auto_paginates_newest_first(client: OpenAI, receiver: Receiver) -> None:
    ids = [client.webhooks.create(name=f"e{i}", url=receiver.url, event_types=["video.failed"]).id for i in range(5)]
    assert [e.id for e in client.webhooks.list(limit=2)] == list(reversed(ids))
    page = client.webhooks.list(limit=2)
    assert page.has_more is True and len(page.data) == 2


def test_test_call_sends_a_verifiable_event(client: OpenAI, receiver: Receiver) -> None:
    endpoint = client.webhooks.create(name="t", url=receiver.url, event_types=["video.completed"])
    result = client.webhooks.test(endpoint.id, event_type="video.completed")
    assert (result.object, result.status_code, result.success, result.webhook_endpoint_id) == (
        "webhook_endpoint.test", 204, True, endpoint.id)
    headers, body, _ = receiver.received[-1]
    event = client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
    assert (event.type, event.object) == ("video.completed", "event")
    receiver.failures = 100
    assert client.webhooks.test(endpoint.id, event_type="video.failed").status_code == 500


def test_rotation_keeps_the_old_secret_for_a_grace_period(client: OpenAI, gateway: Gateway,
                                                          receiver: Receiver) -> None:
    endpoint = client.webhooks.create(name="r", url=receiver.url, event_types=["video.completed"])
    rotated = client.webhooks.rotate_secret(endpoint.id, keep_old_secret_active_for_24_hours=True)
    client.webhooks.test(endpoint.id, event_type="video.completed")
    headers, body, _ = receiver.received[-1]
    client.webhooks.verify_signature(body, headers, secret=rotated.signing_secret)
    client.webhooks.verify_signature(body, headers, secret=endpoint.signing_secret)  # old one, still valid
    client.webhooks.rotate_secret(endpoint.id)  # without the grace period, the old secret stops at once
    client.webhooks.test(endpoint.id, event_type="video.completed")
    headers, body, _ = receiver.received[-1]
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body, headers, secret=rotated.signing_secret)


def test_job_events_and_progress(client: OpenAI, gateway: Gateway, receiver: Receiver) -> None:
    endpoint = client.webhooks.create(name="p", url=receiver.url, event_types=["job.progress", "video.completed"])
    video = client.videos.create(prompt="A speaker")
    gateway.advance(video.id, "admitted", 5)
    gateway.advance(video.id, "rendering", 40)
    gateway.advance(video.id, "completed", 100, output_uri="cas://sha256/" + "0" * 64)
    _deliver_all(gateway)
    events = [client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
              for headers, body, _ in receiver.received]
    assert sorted(e.type for e in events) == ["job.progress", "job.progress", "video.completed"]
    assert all(e.data.id == video.id for e in events)
    payloads = [json.loads(body) for _, body, _ in receiver.received]
    progress = {(p["data"]["status"], p["data"]["progress"]) for p in payloads if p["type"] == "job.progress"}
    assert progress == {("admitted", 5), ("rendering", 40)}
    for headers, body, _ in receiver.received:
        Webhook(endpoint.signing_secret).verify(body, headers)


def test_errors_are_openai_errors(client: OpenAI, gateway: Gateway, receiver: Receiver) -> None:
    with pytest.raises(openai.BadRequestError) as forbidden:
        client.webhooks.create(name="x", url="http://169.254.169.254/latest", event_types=["video.completed"])
    assert (forbidden.value.code, forbidden.value.param) == ("webhook_url_forbidden", "url")
    with pytest.raises(openai.BadRequestError) as bad_type:
        client.webhooks.create(name="x", url=receiver.url, event_types=["video.exploded"])
    assert bad_type.value.param is not None and bad_type.value.param.startswith("event_types")
    theirs = client.webhooks.create(name="mine", url=receiver.url, event_types=["video.completed"])
    _, other_key = gateway.new_tenant("other")
    other = OpenAI(api_key=other_key, base_url=f"{gateway.url}/v1", max_retries=0)
    for call in (lambda: other.webhooks.retrieve(theirs.id), lambda: other.webhooks.delete(theirs.id),
                 lambda: other.webhooks.update(theirs.id, name="stolen"),
                 lambda: other.webhooks.rotate_secret(theirs.id),
                 lambda: other.webhooks.test(theirs.id, event_type="video.completed")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(other.webhooks.list()) == []
    anonymous = OpenAI(api_key="rfk_nope", base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.webhooks.list()
    assert "video.completed" in client.webhooks.event_types.list().data
