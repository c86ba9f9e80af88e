"""Rate limits, the moderation hook and signed download URLs (real gateway, real Postgres)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from pydantic import SecretStr

from reelforge_gateway.moderation import Moderator
from reelforge_gateway.settings import GatewaySettings
from reelforge_gateway.signing import SignatureExpired, SignatureInvalid, UrlSigner
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway

SECRET = "test-signing-secret"


@pytest.fixture
def gateway_settings() -> GatewaySettings:
    return make_settings(rate_limit_per_minute=5, blocked_terms=["gun", "Forbidden Thing"],
                         download_signing_secret=SecretStr(SECRET), download_url_ttl_seconds=60)


def _auth(gateway: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.api_key}"}


def test_rate_limit_per_key(gateway: Gateway) -> None:
    responses = [httpx.get(f"{gateway.url}/v1/jobs", headers=_auth(gateway)) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r.headers["ratelimit-remaining"] for r in responses[:5]] == ["4", "3", "2", "1", "0"]
    assert responses[0].headers["ratelimit-limit"] == "5"
    limited = responses[-1]
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 12
    # Another key has its own bucket.
    _, other_key = gateway.new_tenant("other")
    assert httpx.get(f"{gateway.url}/v1/jobs", headers={"Authorization": f"Bearer {other_key}"}).status_code == 200
    # The SDK sees a RateLimitError.
    client = OpenAI(api_key=gateway.api_key, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.videos.list()


def test_moderation_blocks_prompts(gateway: Gateway) -> None:
    blocked = httpx.post(f"{gateway.url}/v1/jobs", headers=_auth(gateway),
                         json={"prompt": "A man with a GUN", "seconds": 4})
    assert blocked.status_code == 422 and blocked.json()["code"] == "prompt_blocked"
    narrated = httpx.post(f"{gateway.url}/v1/jobs", headers=_auth(gateway),
                          json={"prompt": "A toy", "seconds": 4, "narration": "Buy the forbidden  thing"})
    assert narrated.status_code == 202  # two spaces: not the phrase
    client = OpenAI(api_key=gateway.api_key, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.videos.create(prompt="the forbidden thing, up close")
    assert caught.value.code == "prompt_blocked"
    assert int(gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs"))) == 1


def test_moderator_matches_whole_words() -> None:
    moderator = Moderator(["gun"])
    assert moderator.blocked_term("Guns begun") is None
    assert moderator.blocked_term("a gun!") == "gun"
    assert Moderator([]).blocked_term("anything") is None


def test_signed_download_url(gateway: Gateway, sample_video: Path) -> None:
    job = httpx.post(f"{gateway.url}/v1/jobs", headers=_auth(gateway), json={"prompt": "A toy", "seconds": 4}).json()
    early = httpx.get(f"{gateway.url}/v1/jobs/{job['id']}/download_url", headers=_auth(gateway))
    assert early.status_code == 409
    gateway.complete(job["id"], sample_video)
    link = httpx.get(f"{gateway.url}/v1/jobs/{job['id']}/download_url", headers=_auth(gateway)).json()
    assert link["url"].startswith(f"{gateway.url}/v1/downloads/{job['id']}?")
    downloaded = httpx.get(link["url"])  # no API key
    assert downloaded.status_code == 200
    assert downloaded.content == sample_video.read_bytes()
    tampered = httpx.get(link["url"].replace("signature=", "signature=0"))
    assert tampered.status_code == 403 and tampered.json()["code"] == "invalid_signature"
    other_job = link["url"].replace(job["id"], "job_000000000000000000000000")
    assert httpx.get(other_job).status_code == 403
    signer = UrlSigner(SECRET.encode(), 60)
    expires, signature = signer.sign(job["id"], "video", now=time.time() - 120)
    expired = httpx.get(f"{gateway.url}/v1/downloads/{job['id']}",
                        params={"variant": "video", "expires": expires, "signature": signature})
    assert expired.status_code == 403 and expired.json()["code"] == "download_url_expired"
    longer = httpx.get(link["url"].replace(f"expires={link['url'].split('expires=')[1].split('&')[0]}",
                                           f"expires={expires + 10_000}"))
    assert longer.status_code == 403


def test_signer() -> None:
    signer = UrlSigner(b"k", 10)
    expires, signature = signer.sign("job_1", "video", now=1000)
    signer.verify("job_1", "video", expires, signature, now=1005)
    with pytest.raises(SignatureExpired):
        signer.verify("job_1", "video", expires, signature, now=1011)
    with pytest.raises(SignatureInvalid):
        signer.verify("job_2", "video", expires, signature, now=1005)
    with pytest.raises(SignatureInvalid):
        UrlSigner(b"other", 10).verify("job_1", "video", expires, signature, now=1005)
