"""The OpenAI-shaped adapter against the fake Videos API over real HTTP, with the real tracker and Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reelforge_core.media import probe
from reelforge_render.fakes.common import Behaviour, serving
from reelforge_render.fakes.harness import (
    adapter,
    fake_stats,
    fake_submissions,
    set_behaviour,
    spec,
    webhook_receiver,
)
from reelforge_render.fakes.openai import create_app
from reelforge_render.providers.base import ProviderError, ProviderJob
from reelforge_render.providers.config import ProviderConfig
from reelforge_render.providers.openai import OpenAIVideos

KEY_ENV = "TEST_OPENAI_KEY"
pytestmark = pytest.mark.asyncio


@pytest.fixture
def fake_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(KEY_ENV, "test-key")
    with serving(create_app(Behaviour(latency_s=0.4))) as url:
        yield url


def provider(url: str, **overrides: object) -> OpenAIVideos:
    fields: dict[str, object] = {"poll_interval_seconds": 0.05, "price_micros_per_second": 100_000, **overrides}
    config = ProviderConfig(kind="openai", base_url=f"{url}/v1", api_key_env=KEY_ENV, **fields)  # type: ignore[arg-type]
    return OpenAIVideos("sora", config)


async def test_renders_through_submit_poll_and_download(postgres_dsn: str, tmp_path: Path, fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        await a.request("job1/r1", "sora", spec())
        result = await a.result("job1/r1")
    assert result.ok, result.error_message
    assert result.provider == "sora" and result.provider_job_id.startswith("video_")
    stored = a.content.path_of(result.output_uri)
    probed = await probe(stored)
    assert probed.video is not None and (probed.video.width, probed.video.height) == (320, 180)
    assert abs(result.output_seconds - 4) < 0.2
    assert result.provider_cost_micros == 400_000  # 4 s at 0.10 per second
    stats = await fake_stats(fake_url)
    assert stats["created"] == 1 and stats["polls"] >= 2 and stats["downloads"] == 1


async def test_progress_is_reported_while_polling(fake_url: str) -> None:
    sora = provider(fake_url)
    job = ProviderJob("j/r1", spec())
    job = ProviderJob(job.render_id, job.spec, await sora.submit(job))
    seen = set()
    for _ in range(40):
        status = await sora.status(job)
        seen.add(status.state)
        if status.state == "running":
            assert 0 <= status.progress < 100
        if status.terminal:
            break
        await asyncio.sleep(0.02)
    assert {"running", "succeeded"} <= seen
    await sora.close()


async def test_submit_is_idempotent_by_render_id(fake_url: str) -> None:
    sora = provider(fake_url)
    job = ProviderJob("j/r1", spec())
    assert await sora.submit(job) == await sora.submit(job)
    assert (await fake_stats(fake_url))["created"] == 1
    await sora.close()


async def test_429_burst_is_waited_out_honouring_retry_after(postgres_dsn: str, tmp_path: Path, fake_url: str) -> None:
    await set_behaviour(fake_url, throttle_next=3, retry_after_s=0.5)
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        started = time.monotonic()
        await a.request("job1/r1", "sora", spec())
        result = await a.result("job1/r1")
        elapsed = time.monotonic() - started
    assert result.ok, result.error_message
    stats = await fake_stats(fake_url)
    assert stats["throttled"] == 3 and stats["created"] == 1
    assert elapsed >= 1.5  # submit throttled three times, 0.5 s each, before the job even started


async def test_retry_after_is_parsed_from_the_429(fake_url: str) -> None:
    await set_behaviour(fake_url, throttle_next=1, retry_after_s=7)
    sora = provider(fake_url)
    with pytest.raises(ProviderError) as caught:
        await sora.submit(ProviderJob("j/r1", spec()))
    assert caught.value.code == "rate_limited" and caught.value.retry_after == 7 and caught.value.retriable
    await sora.close()


async def test_persistent_429_on_submit_goes_back_to_the_orchestrator(postgres_dsn: str, tmp_path: Path,
                                                                       fake_url: str) -> None:
    await set_behaviour(fake_url, throttle_next=100, retry_after_s=0.05)
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        await a.request("job1/r1", "sora", spec())
        result = await a.result("job1/r1")
    assert not result.ok and result.error_code == "rate_limited" and result.retriable
    assert result.retry_after_seconds == pytest.approx(0.05)


@pytest.mark.parametrize(("prompt", "job_spec_kw", "code", "retriable"), [
    ("A scene [policy]", {}, "content_policy", False),
    ("A scene [invalid]", {}, "invalid_input", False),
    ("A scene [fail]", {}, "internal", True),
    ("A scene", {"seconds": 5}, "invalid_input", False),  # 5 s is not one of the API's durations
    ("A scene", {"width": 333}, "invalid_input", False),  # nor is 333x180 one of its sizes
])
async def test_error_mapping(postgres_dsn: str, tmp_path: Path, fake_url: str, prompt: str,
                             job_spec_kw: dict[str, object], code: str, retriable: bool) -> None:
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        await a.request("job1/r1", "sora", spec(prompt, **job_spec_kw))  # type: ignore[arg-type]
        result = await a.result("job1/r1")
    assert (result.ok, result.error_code, result.retriable) == (False, code, retriable), result.error_message


async def test_wrong_key_is_provider_unavailable(postgres_dsn: str, tmp_path: Path, fake_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong")
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        await a.request("job1/r1", "sora", spec())
        result = await a.result("job1/r1", within=30)
    assert (result.error_code, result.retriable) == ("provider_unavailable", True)
    assert "wrong" not in result.error_message


async def test_provider_down_is_retriable(postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-key")
    config_url = "http://127.0.0.1:9"  # discard port: nothing listens
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(config_url)}) as a:
        await a.request("job1/r1", "sora", spec())
        result = await a.result("job1/r1")
    assert (result.error_code, result.retriable) == ("provider_unavailable", True)


async def test_cancel_stops_the_job_at_the_provider(postgres_dsn: str, tmp_path: Path, fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        await a.request("job1/r1", "sora", spec("Long one [stuck]"))
        for _ in range(100):
            if (await fake_stats(fake_url))["polls"]:
                break
            await asyncio.sleep(0.02)
        await a.cancel("job1/r1", "sora")
        result = await a.result("job1/r1")
    assert (result.ok, result.error_code, result.retriable) == (False, "cancelled", False)
    assert (await fake_stats(fake_url))["cancels"] == 1


async def test_cancel_before_the_request_arrives(postgres_dsn: str, tmp_path: Path, fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        await a.cancel("job1/r1", "sora")
        await a.request("job1/r1", "sora", spec())
        result = await a.result("job1/r1")
    assert result.error_code == "cancelled"
    assert (await fake_stats(fake_url))["created"] == 0


async def test_stuck_job_times_out_and_is_cancelled(postgres_dsn: str, tmp_path: Path, fake_url: str) -> None:
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}, render_timeout=1.0) as a:
        await a.request("job1/r1", "sora", spec("Forever [stuck]"))
        result = await a.result("job1/r1")
    assert (result.ok, result.error_code, result.retriable) == (False, "timeout", True)
    assert (await fake_stats(fake_url))["cancels"] == 1


async def test_webhook_triggers_an_early_poll(postgres_dsn: str, tmp_path: Path, fake_url: str) -> None:
    """OpenAI's `video.completed` event names the video but carries no state: the tracker polls at once."""
    slow = provider(fake_url, poll_interval_seconds=30.0)  # polling alone would take 30 s
    receiver = webhook_receiver("sora")
    with serving(receiver) as hook_url:
        async with adapter(postgres_dsn, tmp_path, {"sora": slow}) as a:
            receiver.state.adapter = a
            await set_behaviour(fake_url, webhook_url=f"{hook_url}/hook")
            await a.request("job1/r1", "sora", spec())
            result = await a.result("job1/r1", within=10)
    assert result.ok
    stats = await fake_stats(fake_url)
    assert stats["webhooks_sent"] == 1 and stats["polls"] == 1


async def test_restart_resumes_polling_without_submitting_twice(postgres_dsn: str, tmp_path: Path,
                                                                fake_url: str) -> None:
    await set_behaviour(fake_url, latency_s=1.5)
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as a:
        await a.request("job1/r1", "sora", spec())
        for _ in range(100):
            if (await fake_stats(fake_url))["polls"]:
                break
            await asyncio.sleep(0.02)
    # the first adapter is gone mid-render; a new one starts from Postgres
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url)}) as b:
        assert len(b.tracker) == 1
        result = await b.result("job1/r1")
        await b.request("job1/r1", "sora", spec())  # a redelivery after the answer changes nothing
        await asyncio.sleep(0.2)
        assert len(await b.results()) == 1
    assert result.ok
    assert (await fake_stats(fake_url))["created"] == 1


async def test_a_lost_submit_answer_is_retried_with_the_same_idempotency_key(postgres_dsn: str, tmp_path: Path,
                                                                             fake_url: str) -> None:
    # The provider dedupes on Idempotency-Key, so repeating a submit whose answer was lost is safe.
    await set_behaviour(fake_url, answer_delay_s=0.6)
    async with adapter(postgres_dsn, tmp_path, {"sora": provider(fake_url, request_timeout_seconds=0.3)}) as a:
        await a.request("job1/r1", "sora", spec())
        await asyncio.sleep(0.5)
        await set_behaviour(fake_url, answer_delay_s=0.0)
        result = await a.result("job1/r1")
    assert result.ok, result.error_message
    submissions = await fake_submissions(fake_url)
    assert submissions == {"job1/r1": 1}
    async with httpx.AsyncClient() as client:
        requests = (await client.get(f"{fake_url}/_fake/submissions")).json()["requests_by_key"]
    assert requests["job1/r1"] >= 2


async def test_self_hosted_pool_reports_gpu_seconds(postgres_dsn: str, tmp_path: Path, fake_url: str) -> None:
    await set_behaviour(fake_url, gpus=8)
    async with adapter(postgres_dsn, tmp_path, {"gpu-pool": provider(fake_url)}) as a:
        await a.request("job1/r1", "gpu-pool", spec())
        result = await a.result("job1/r1")
    assert result.ok and result.gpus == 8 and result.gpu_seconds == pytest.approx(8 * 0.4)


async def test_unknown_provider_is_answered_at_once(postgres_dsn: str, tmp_path: Path) -> None:
    async with adapter(postgres_dsn, tmp_path, {}) as a:
        await a.request("job1/r1", "nope", spec())
        result = await a.result("job1/r1", within=1)
    assert (result.error_code, result.retriable) == ("invalid_input", False)
