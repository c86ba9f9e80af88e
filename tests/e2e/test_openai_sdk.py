"""The official `openai` SDK, unmodified, against the running platform's /v1/videos."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from reelforge_local.stack import Stack, Tenant

pytestmark = pytest.mark.stack


@pytest.fixture
def client(stack: Stack, tenant: Tenant) -> OpenAI:
    return OpenAI(api_key=tenant.api_key, base_url=f"{stack.gateway_url}/v1", max_retries=2)


def test_create_and_poll_then_download(client: OpenAI, tmp_path: Path) -> None:
    video = client.videos.create_and_poll(prompt="A water purifier on a kitchen counter. Clean water pours.",
                                          model="sora-2", seconds="4", size="1280x720", poll_interval_ms=200)
    assert video.status == "completed", video
    assert (video.model, video.seconds, video.size, video.progress) == ("sora-2", "4", "1280x720", 100)
    assert video.completed_at is not None and video.error is None
    path = tmp_path / "video.mp4"
    client.videos.download_content(video.id, variant="video").write_to_file(path)
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, check=True).stdout)
    picture = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (picture["width"], picture["height"]) == (1280, 720)
    assert abs(float(probe["format"]["duration"]) - 4) < 0.5
    assert video.id in [v.id for v in client.videos.list(limit=100)]
    assert client.videos.delete(video.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_errors_are_sdk_exceptions(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("job_unknown")
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(prompt="x", size="1x1")  # type: ignore[arg-type]
    assert bad.value.param == "size"
