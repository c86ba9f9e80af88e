"""Veo (Gemini API), Runway, fal queue and Replicate adapters, each against its fake over real HTTP,
driven by the real tracker with its in-flight set in Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from reelforge_render.fakes import fal, replicate, runway, veo, vertex_veo, wavespeed
from reelforge_render.fakes.common import Behaviour, serving
from reelforge_render.fakes.harness import (
    adapter,
    fake_stats,
    fake_submissions,
    set_behaviour,
    spec,
    webhook_receiver,
)
from reelforge_render.providers.base import Provider, ProviderJob
from reelforge_render.providers.config import ProviderConfig
from reelforge_render.providers.registry import create_provider

pytestmark = pytest.mark.asyncio
KEY_ENV = "TEST_PROVIDER_KEY"
LOOPBACK = ["127.0.0.1/32", "::1/128"]


@dataclass(frozen=True)
class Case:
    kind: str
    app: Callable[[Behaviour], FastAPI]
    model: str
    size: dict[str, int] = field(default_factory=lambda: {"width": 1280, "height": 720})
    seconds: float = 4
    cdn: bool = True  # outputs come from another origin (SSRF guard applies)
    webhook: bool = False
    cancel: bool = True  # the provider has a cancel endpoint
    options: dict[str, str] = field(default_factory=dict)


CASES = {
    "veo": Case("veo", veo.create_app, "veo-3.0-fast-generate-001", cdn=False),
    # outputs in Cloud Storage (the fake serves its media download too, with our token)
    "vertex_veo": Case("vertex_veo", vertex_veo.create_app, "veo-3.0-generate-001", cdn=False,
                       options={"project": "p1", "location": "us-central1", "storage_uri": "gs://renders/out/"}),
    "runway": Case("runway", runway.create_app, "gen4_turbo", {"width": 320, "height": 180}, seconds=5),
    "fal": Case("fal", fal.create_app, "fal-ai/veo3/fast", webhook=True),
    "replicate": Case("replicate", replicate.create_app, "google/veo-3", webhook=True),
    "wavespeed": Case("wavespeed", wavespeed.create_app, "wavespeed-ai/wan-2.1/t2v-720p",
                      {"width": 320, "height": 180}, seconds=5, webhook=True, cancel=False),
}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


@pytest.fixture
def fake_url(case: Case, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(KEY_ENV, "test-key")
    with serving(case.app(Behaviour(latency_s=0.4))) as url:
        yield url


def make(case: Case, url: str, **overrides: object) -> Provider:
    options = {**case.options, "gcs_base_url": url} if "storage_uri" in case.options else case.options
    fields: dict[str, object] = {"poll_interval_seconds": 0.05, "price_micros_per_second": 50_000,
                                 "allow_output_hosts": LOOPBACK, "model": case.model, "options": options,
                                 **overrides}
    return create_provider(case.kind, ProviderConfig(kind=case.kind, base_url=url, api_key_env=KEY_ENV,
                                                     **fields))  # type: ignore[arg-type]


def job_spec(case: Case, prompt: str = "A lighthouse at dusk.", **kw: object) -> object:
    return spec(prompt, seconds=kw.pop("seconds", case.seconds), **{**case.size, **kw})  # type: ignore[arg-type]


async def test_success(postgres_dsn: str, tmp_path: Path, case: Case, fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as a:
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
    assert result.ok, result.error_message
    assert a.content.path_of(result.output_uri).stat().st_size > 1000
    assert abs(result.output_seconds - case.seconds) < 0.3
    assert result.provider_cost_micros == round(case.seconds) * 50_000
    stats = await fake_stats(fake_url)
    assert stats["created"] == 1 and stats["downloads"] == 1 and stats["polls"] >= 2
    assert await fake_submissions(fake_url) == {"job1/r1": 1}


async def test_progress_and_queue_states(case: Case, fake_url: str) -> None:
    await set_behaviour(fake_url, queue_s=0.2, latency_s=0.4)
    provider = make(case, fake_url)
    job = ProviderJob("j/r1", job_spec(case))  # type: ignore[arg-type]
    job = ProviderJob(job.render_id, job.spec, await provider.submit(job))
    states = []
    for _ in range(100):
        status = await provider.status(job)
        states.append(status.state)
        if status.terminal:
            break
        await asyncio.sleep(0.02)
    await provider.close()
    assert states[-1] == "succeeded"
    assert "running" in states
    if "veo" not in case.kind:  # Google operations have no queued state, only done or not
        assert "queued" in states


async def test_429_honours_retry_after(postgres_dsn: str, tmp_path: Path, case: Case, fake_url: str) -> None:
    await set_behaviour(fake_url, throttle_next=2, retry_after_s=0.6)
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as a:
        started = time.monotonic()
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
    assert result.ok, result.error_message
    assert time.monotonic() - started >= 1.2
    stats = await fake_stats(fake_url)
    assert stats["throttled"] == 2 and stats["created"] == 1
    assert await fake_submissions(fake_url) == {"job1/r1": 1}


@pytest.mark.parametrize(("prompt", "seconds", "code", "retriable"), [
    ("A scene [policy]", None, "content_policy", False),
    ("A scene [invalid]", None, "invalid_input", False),
    ("A scene [fail]", None, "internal", True),
    ("A scene", 7, "invalid_input", False),  # no provider here renders 7 s
])
async def test_error_mapping(postgres_dsn: str, tmp_path: Path, case: Case, fake_url: str, prompt: str,
                             seconds: float | None, code: str, retriable: bool) -> None:
    extra = {"seconds": seconds} if seconds else {}
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as a:
        await a.request("job1/r1", case.kind, job_spec(case, prompt, **extra))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
    assert (result.ok, result.error_code, result.retriable) == (False, code, retriable), result.error_message


async def test_cancel(postgres_dsn: str, tmp_path: Path, case: Case, fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as a:
        await a.request("job1/r1", case.kind, job_spec(case, "Slow [stuck]"))  # type: ignore[arg-type]
        for _ in range(100):
            if (await fake_stats(fake_url))["polls"]:
                break
            await asyncio.sleep(0.02)
        await a.cancel("job1/r1", case.kind)
        result = await a.result("job1/r1")
    assert (result.error_code, result.retriable) == ("cancelled", False)
    assert (await fake_stats(fake_url))["cancels"] == (1 if case.cancel else 0)


async def test_stuck_job_times_out(postgres_dsn: str, tmp_path: Path, case: Case, fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}, render_timeout=1.0) as a:
        await a.request("job1/r1", case.kind, job_spec(case, "Forever [stuck]"))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
    assert (result.error_code, result.retriable) == ("timeout", True)
    assert (await fake_stats(fake_url))["cancels"] == (1 if case.cancel else 0)


async def test_output_url_on_a_private_address_is_refused(postgres_dsn: str, tmp_path: Path, case: Case,
                                                          fake_url: str) -> None:
    if not case.cdn:
        pytest.skip("outputs come from the configured API origin")
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url, allow_output_hosts=[])}) as a:
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
    assert not result.ok and result.error_code == "internal" and "refused" in result.error_message
    assert (await fake_stats(fake_url))["downloads"] == 0


async def test_webhook_path(postgres_dsn: str, tmp_path: Path, case: Case, fake_url: str) -> None:
    """The provider's signed webhook is read in place of a poll: done without a single status poll."""
    if not case.webhook:
        pytest.skip("the provider has no webhooks")
    receiver = webhook_receiver(case.kind)
    with serving(receiver) as hook_url:
        provider = make(case, fake_url, poll_interval_seconds=30.0,  # polling alone would take 30 s
                        webhook_url=f"{hook_url}/hook")
        async with adapter(postgres_dsn, tmp_path, {case.kind: provider}) as a:
            receiver.state.adapter = a
            await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
            await a.request("job2/r1", case.kind, job_spec(case, prompt="Flagged [policy]"))  # type: ignore[arg-type]
            ok, flagged = await a.result("job1/r1", within=30), await a.result("job2/r1", within=30)
            assert a.tracker.webhooks == 2
    assert ok.ok and ok.output_uri
    assert (flagged.ok, flagged.error_code) == (False, "content_policy")
    stats = await fake_stats(fake_url)
    assert stats["webhooks_sent"] == 2 and stats["polls"] == 0


async def test_replayed_webhook_and_a_poll_have_one_effect(postgres_dsn: str, tmp_path: Path, case: Case,
                                                            fake_url: str) -> None:
    if not case.webhook:
        pytest.skip("the provider has no webhooks")
    receiver = webhook_receiver(case.kind)
    with serving(receiver) as hook_url:
        provider = make(case, fake_url, poll_interval_seconds=0.05, webhook_url=f"{hook_url}/hook")
        async with adapter(postgres_dsn, tmp_path, {case.kind: provider}) as a:
            receiver.state.adapter = a
            await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
            await a.result("job1/r1", within=30)
            for _ in range(100):  # the webhook arrives after the poll already finished the render
                if (await fake_stats(fake_url))["webhooks_sent"]:
                    break
                await asyncio.sleep(0.05)
            delivery = (await _deliveries(fake_url))[0]
            for _ in range(2):  # and is replayed
                await a.provider_event(case.kind, delivery["body"].encode())
            await asyncio.sleep(0.3)
            results = [r for r in await a.results() if r.render_id == "job1/r1"]
    assert len(results) == 1 and results[0].ok
    assert (await fake_stats(fake_url))["downloads"] == 1


async def test_a_lost_webhook_is_made_up_for_by_polling(postgres_dsn: str, tmp_path: Path, case: Case,
                                                         fake_url: str) -> None:
    if not case.webhook:
        pytest.skip("the provider has no webhooks")
    await set_behaviour(fake_url, webhooks_lost=True)
    receiver = webhook_receiver(case.kind)
    with serving(receiver) as hook_url:
        provider = make(case, fake_url, poll_interval_seconds=0.3, webhook_url=f"{hook_url}/hook")
        async with adapter(postgres_dsn, tmp_path, {case.kind: provider}) as a:
            receiver.state.adapter = a
            await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
            result = await a.result("job1/r1", within=30)
            assert a.tracker.webhooks == 0
    assert result.ok
    stats = await fake_stats(fake_url)
    assert stats["webhooks_lost"] == 1 and stats["webhooks_sent"] == 0 and stats["polls"] >= 1


async def _deliveries(base_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        return list((await client.get(f"{base_url}/_fake/deliveries")).json())


async def test_a_lost_submit_answer_is_not_submitted_again(postgres_dsn: str, tmp_path: Path, case: Case,
                                                           fake_url: str) -> None:
    # The provider creates the job but its answer arrives after our request timeout: a retry would start a
    # second job there (none of these providers dedupes), so the attempt ends retriable instead.
    await set_behaviour(fake_url, answer_delay_s=1.0)
    provider = make(case, fake_url, request_timeout_seconds=0.3)
    async with adapter(postgres_dsn, tmp_path, {case.kind: provider}) as a:
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
    assert (result.ok, result.error_code, result.retriable) == (False, "provider_unavailable", True)
    assert "not submitting it twice" in result.error_message
    assert await fake_submissions(fake_url) == {"job1/r1": 1}


async def test_a_crash_during_submit_is_not_submitted_again_after_restart(postgres_dsn: str, tmp_path: Path,
                                                                         case: Case, fake_url: str) -> None:
    await set_behaviour(fake_url, answer_delay_s=2.0)
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as a:
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        for _ in range(200):
            if (await fake_stats(fake_url))["created"]:
                break
            await asyncio.sleep(0.02)
    # the adapter died while the provider was answering; a new one resumes from Postgres
    await set_behaviour(fake_url, answer_delay_s=0.0)
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as b:
        result = await b.result("job1/r1")
    assert (result.ok, result.error_code, result.retriable) == (False, "provider_unavailable", True)
    assert await fake_submissions(fake_url) == {"job1/r1": 1}


async def test_a_refused_submit_is_retried_and_submits_once(postgres_dsn: str, tmp_path: Path, case: Case,
                                                          fake_url: str) -> None:
    # A 429 is an answer: nothing started there, so the record is cleared and the submit retried.
    await set_behaviour(fake_url, throttle_next=1, retry_after_s=0.1)
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as a:
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
        pending = await a.pool.fetchval("SELECT submit_pending FROM renders WHERE render_id = 'job1/r1'")
    assert result.ok and pending is False
    assert await fake_submissions(fake_url) == {"job1/r1": 1}


async def test_vertex_inline_video_and_a_refreshed_token(postgres_dsn: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Without storage_uri Vertex returns the video inline (bytesBase64Encoded); the OAuth token is read from a
    # file and re-read while running, so a rotated token keeps working.
    token = tmp_path / "token"
    token.write_text("old-token\n")
    with serving(vertex_veo.create_app(Behaviour(latency_s=0.3, api_key="old-token"))) as url:
        config = ProviderConfig(kind="vertex_veo", base_url=url, api_key_file=token, poll_interval_seconds=0.05,
                                model="veo-3.0-generate-001", options={"project": "p1"})
        provider = create_provider("vertex_veo", config)
        provider._http.client.auth._ttl = 0.0  # type: ignore[attr-defined]  # re-read on every request here
        async with adapter(postgres_dsn, tmp_path / "content", {"vertex": provider}) as a:
            await a.request("job1/r1", "vertex", spec(width=1280, height=720))
            await set_behaviour(url, api_key="new-token")
            token.write_text("new-token\n")
            result = await a.result("job1/r1")
        stats = await fake_stats(url)
    assert result.ok, result.error_message
    assert a.content.path_of(result.output_uri).stat().st_size > 1000
    assert stats["created"] == 1 and stats["throttled"] == 0


@pytest.mark.parametrize(("output", "says"), [
    ("corrupt", "unreadable video"), ("truncated", "packets"), ("empty", "empty output"),
])
async def test_damaged_output_fails_with_a_clear_code(postgres_dsn: str, tmp_path: Path, case: Case, fake_url: str,
                                                      output: str, says: str) -> None:
    await set_behaviour(fake_url, output=output)
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url)}) as a:
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        result = await asyncio.wait_for(a.result("job1/r1"), 60)
    assert not result.ok and result.error_code == "internal", (result.error_code, result.error_message)
    assert says in result.error_message, result.error_message
    assert not list((a.content.root / "sha256").rglob("*")), "a damaged output was stored"


async def test_output_over_the_size_limit_is_refused(postgres_dsn: str, tmp_path: Path, case: Case,
                                                     fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {case.kind: make(case, fake_url, max_output_bytes=2048)}) as a:
        await a.request("job1/r1", case.kind, job_spec(case))  # type: ignore[arg-type]
        result = await asyncio.wait_for(a.result("job1/r1"), 60)
    assert not result.ok and result.error_code == "internal"
    assert "exceeds 2048" in result.error_message, result.error_message
