"""Provider webhooks end to end on the shared stack: fake provider -> gateway (signature verified) -> outbox ->
render.v1.provider-event -> render adapter, which reads the body in place of a poll.

The render adapter is restarted with Replicate, fal, WaveSpeedAI and an OpenAI-shaped provider configured
(their fakes over real HTTP, polling every 90 s, so a render finished without a poll was finished by its
webhook) and the gateway with each provider's webhook scheme (fal's keys from the fake's JWKS URL). Render
requests are put on render.v1.requested directly (no orchestrator job: the orchestrator ignores the result
of a render it did not ask for), and the results read back from render.v1.result."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from reelforge.jobs.v1 import jobs_pb2
from reelforge.render.v1 import render_pb2
from reelforge_core import topics
from reelforge_local.stack import Stack
from reelforge_render.fakes import fal, openai, replicate, wavespeed
from reelforge_render.fakes.common import Behaviour, serving
from reelforge_render.fakes.signing import DEFAULT_WEBHOOK_SECRET
from tests.conftest import db_fetch

pytestmark = pytest.mark.stack
KEY_ENV = "REELFORGE_E2E_PROVIDER_KEY"
SECRET_ENV = "REELFORGE_E2E_PROVIDER_WEBHOOK_SECRET"
LOOPBACK = ["127.0.0.1/32", "::1/128"]


@dataclass(frozen=True)
class Provider:
    name: str
    kind: str
    model: str
    width: int
    height: int
    seconds: int
    scheme: str
    polls_on_webhook: int = 0  # OpenAI's event carries no state: one poll follows it


PROVIDERS = {
    "replicate-wh": Provider("replicate-wh", "replicate", "google/veo-3", 1280, 720, 4, "standard"),
    "fal-wh": Provider("fal-wh", "fal", "fal-ai/veo3/fast", 1280, 720, 4, "fal"),
    "wavespeed-wh": Provider("wavespeed-wh", "wavespeed", "wavespeed-ai/wan-2.1/t2v-720p", 320, 180, 5, "wavespeed"),
    "sora-wh": Provider("sora-wh", "openai", "sora-2", 320, 180, 4, "standard", polls_on_webhook=1),
    # Its fake loses every webhook: polling (every second here) finishes the render anyway.
    "replicate-lost": Provider("replicate-lost", "replicate", "google/veo-3", 1280, 720, 4, "standard"),
}
APPS = {"replicate": replicate.create_app, "fal": fal.create_app, "wavespeed": wavespeed.create_app,
        "openai": openai.create_app}


@pytest.fixture(scope="module")
def fakes(stack: Stack) -> Iterator[dict[str, str]]:
    with ExitStack() as running:
        urls = {name: running.enter_context(serving(APPS[p.kind](Behaviour(latency_s=0.5))))
                for name, p in PROVIDERS.items()}
        gateway, adapter = stack.services["gateway"], stack.services["render-adapter"]
        hooks = {name: {"scheme": p.scheme, "secret_env": SECRET_ENV} for name, p in PROVIDERS.items()}
        hooks["fal-wh"] = {"scheme": "fal", "jwks_url": f"{urls['fal-wh']}/.well-known/jwks.json"}
        gateway.env.update({"REELFORGE_GATEWAY_PROVIDER_WEBHOOKS": json.dumps(hooks),
                            SECRET_ENV: DEFAULT_WEBHOOK_SECRET})
        configured = json.loads(adapter.env.get("REELFORGE_RENDER_PROVIDERS") or "{}")
        for name, p in PROVIDERS.items():
            configured[name] = {
                "kind": p.kind, "base_url": urls[name] + ("/v1" if p.kind == "openai" else ""),
                "api_key_env": KEY_ENV, "model": p.model, "allow_output_hosts": LOOPBACK,
                "poll_interval_seconds": 1.0 if name == "replicate-lost" else 90.0,
                "webhook_url": f"{stack.gateway_url}/v1/provider-webhooks/{name}"}
        adapter.env.update({"REELFORGE_RENDER_PROVIDERS": json.dumps(configured), KEY_ENV: "test-key"})
        # OpenAI's webhook endpoint is set up per project, not per request.
        httpx.post(f"{urls['sora-wh']}/_fake/behaviour",
                   json={"webhook_url": f"{stack.gateway_url}/v1/provider-webhooks/sora-wh"}).raise_for_status()
        httpx.post(f"{urls['replicate-lost']}/_fake/behaviour", json={"webhooks_lost": True}).raise_for_status()
        for service in (gateway, adapter):
            service.stop()
            service.restart()
        yield urls


async def _kafka_request(bootstrap: str, provider: Provider, job_id: str) -> None:
    spec = jobs_pb2.JobSpec(prompt="A speaker on a desk, slow dolly in.", seconds=provider.seconds,
                            width=provider.width, height=provider.height, model=provider.model)
    request = render_pb2.RenderRequested(render_id=f"{job_id}/r1", job_id=job_id, tenant_id="wh-tenant", attempt=1,
                                         provider=provider.name, spec=spec)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.RENDER_REQUESTED, request.SerializeToString(), key=job_id.encode(),
                                     headers=[("event-id", str(uuid.uuid4()).encode()),
                                              ("event-type", b"reelforge.render.v1.RenderRequested")])
    finally:
        await producer.stop()


async def _results(bootstrap: str, job_id: str) -> list[render_pb2.RenderResult]:
    """Every render.v1.result record for the job, read from the start of the topic to its end."""
    consumer = AIOKafkaConsumer(topics.RENDER_RESULT, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        partitions = consumer.assignment() or set()
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key == job_id.encode():
                        result = render_pb2.RenderResult()
                        result.ParseFromString(record.value)
                        found.append(result)
    finally:
        await consumer.stop()
    return found


def _render(stack: Stack, provider: Provider, within: float = 60.0) -> tuple[str, dict[str, object]]:
    job_id = f"whe2e-{uuid.uuid4().hex[:12]}"
    asyncio.run(_kafka_request(stack.bootstrap, provider, job_id))
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        rows = db_fetch(stack, "render", "SELECT state, error_code FROM renders WHERE job_id = $1", job_id)
        if rows and rows[0]["state"] == "finished":
            return job_id, rows[0]
        time.sleep(0.2)
    raise AssertionError(f"{provider.name}: render {job_id} not finished within {within}s")


def _stats(url: str) -> dict[str, int]:
    return dict(httpx.get(f"{url}/_fake/stats").json())


@pytest.mark.parametrize("name", ["replicate-wh", "fal-wh", "wavespeed-wh", "sora-wh"])
def test_webhook_finishes_the_render(stack: Stack, fakes: dict[str, str], name: str) -> None:
    provider, url = PROVIDERS[name], fakes[name]
    job_id, row = _render(stack, provider)
    assert row["error_code"] is None
    deliveries = httpx.get(f"{url}/_fake/deliveries").json()
    assert [d["status"] for d in deliveries] == [202]  # accepted by the gateway (signature verified)
    assert _stats(url)["polls"] == provider.polls_on_webhook  # finished by the webhook, before any poll was due
    results = asyncio.run(_results(stack.bootstrap, job_id))
    assert [(r.ok, r.provider) for r in results] == [(True, name)]

    # The same delivery again (a replay, same signature): acknowledged, no second effect.
    assert httpx.post(f"{url}/_fake/deliveries/0/resend").json()["status"] == 202
    # A forged one (the body changed under the signature): refused.
    forged = httpx.post(deliveries[0]["url"], content=deliveries[0]["body"] + " ", headers=deliveries[0]["headers"])
    assert forged.status_code == 401 and forged.json()["code"] == "webhook_signature_invalid"
    time.sleep(2)
    assert len(asyncio.run(_results(stack.bootstrap, job_id))) == 1
    assert _stats(url)["downloads"] == 1


def test_polling_finishes_a_render_whose_webhook_was_lost(stack: Stack, fakes: dict[str, str]) -> None:
    url = fakes["replicate-lost"]
    job_id, row = _render(stack, PROVIDERS["replicate-lost"])
    assert row["error_code"] is None
    stats = _stats(url)
    assert stats["webhooks_lost"] == 1 and stats["webhooks_sent"] == 0 and stats["polls"] >= 1
    assert [r.ok for r in asyncio.run(_results(stack.bootstrap, job_id))] == [True]
