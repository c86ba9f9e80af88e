"""The official `openai` SDK, unmodified, against the running platform: /v1/videos (create as JSON and
multipart, create_and_poll, every download variant, remix, list auto-pagination, delete) and
/v1/webhook_endpoints (lifecycle, and deliveries that `client.webhooks.unwrap` verifies)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from standardwebhooks import Webhook

from reelforge_local.stack import Stack, Tenant

pytestmark = pytest.mark.stack

JPEG = b"\xff\xd8\xff"


class Receiver:
    """A webhook receiver on the loopback port the test stack's gateway allowlists."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/openai-hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, event_type: str, video_id: str, timeout: float = 30) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, body in list(self.received):
                payload = json.loads(body)
                if payload["type"] == event_type and payload["data"]["id"] == video_id:
                    return headers, body
            time.sleep(0.1)
        raise AssertionError(f"no {event_type} for {video_id}; got {[json.loads(b)['type'] for _, b in self.received]}")


@pytest.fixture(scope="module")
def sdk_tenant(stack: Stack) -> Tenant:
    return stack.create_tenant("openai-sdk-e2e", credit_usd="20")  # its own, so list() holds only this module's


@pytest.fixture(scope="module")
def client(stack: Stack, sdk_tenant: Tenant) -> OpenAI:
    return OpenAI(api_key=sdk_tenant.api_key, base_url=f"{stack.gateway_url}/v1", max_retries=2)


@pytest.fixture(scope="module")
def receiver(webhook_receiver_port: int) -> Iterator[Receiver]:
    r = Receiver(webhook_receiver_port)
    yield r
    r.server.shutdown()


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _picture(path: Path) -> tuple[int, int]:
    stream = next(s for s in _probe(path)["streams"] if s["codec_type"] == "video")
    return stream["width"], stream["height"]


def test_videos_and_webhooks_end_to_end(client: OpenAI, receiver: Receiver, tmp_path: Path) -> None:
    endpoint = client.webhooks.create(name="e2e", url=receiver.url,
                                      event_types=["video.completed", "video.failed", "job.progress"])
    assert endpoint.signing_secret.startswith("whsec_")
    reference = tmp_path / "reference.png"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=orange:size=128x72", "-frames:v", "1",
                    "-y", str(reference)], check=True)
    with reference.open("rb") as image:  # multipart; renders alongside the next one
        referenced = client.videos.create(prompt="This bottle on a shelf", input_reference=image, seconds="4",
                                          size="1280x720")
    assert referenced.status == "queued"

    video = client.videos.create_and_poll(prompt="A water purifier on a kitchen counter. Clean water pours.",
                                          model="sora-2", seconds="4", size="1280x720", poll_interval_ms=200)
    assert video.status == "completed", video
    assert (video.model, video.seconds, video.size, video.progress) == ("sora-2", "4", "1280x720", 100)
    assert video.completed_at is not None and video.error is None

    mp4 = tmp_path / "video.mp4"
    client.videos.download_content(video.id, variant="video").write_to_file(mp4)
    assert _picture(mp4) == (1280, 720)
    assert abs(float(_probe(mp4)["format"]["duration"]) - 4) < 0.5
    thumbnail = tmp_path / "thumbnail.jpg"
    client.videos.download_content(video.id, variant="thumbnail").write_to_file(thumbnail)
    assert thumbnail.read_bytes().startswith(JPEG) and _picture(thumbnail) == (1280, 720)
    sprite = tmp_path / "sprite.jpg"
    client.videos.download_content(video.id, variant="spritesheet").write_to_file(sprite)
    sprite_width, sprite_height = _picture(sprite)
    assert sprite.read_bytes().startswith(JPEG) and sprite_width % 160 == 0 and sprite_width >= 4 * 160
    assert sprite_height == 90  # one row of 160x90 tiles

    headers, body = receiver.wait_for("video.completed", video.id)
    event = client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
    assert (event.type, event.data.id, event.object) == ("video.completed", video.id, "event")
    assert Webhook(endpoint.signing_secret).verify(body, headers)["data"] == {"id": video.id}
    headers, body = receiver.wait_for("job.progress", video.id)
    assert client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret).type == "job.progress"

    remix = client.videos.remix(video.id, prompt="The same purifier at night, lit by the fridge")
    assert (remix.remixed_from_video_id, remix.seconds, remix.size) == (video.id, "4", "1280x720")
    assert client.videos.poll(remix.id, poll_interval_ms=200).status == "completed"
    done = client.videos.poll(referenced.id, poll_interval_ms=200)
    assert done.status == "completed" and done.size == "1280x720"

    assert [v.id for v in client.videos.list(limit=1)] == [remix.id, video.id, referenced.id]  # one per page
    assert [v.id for v in client.videos.list(limit=2, order="asc")] == [referenced.id, video.id, remix.id]

    assert client.videos.delete(remix.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(remix.id)
    assert [e.id for e in client.webhooks.list()] == [endpoint.id]
    assert client.webhooks.delete(endpoint.id).deleted is True


def test_errors_are_sdk_exceptions(client: OpenAI, stack: Stack, tenant: Tenant) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.retrieve("job_unknown")
    assert missing.value.code == "video_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(prompt="x", size="1x1")  # type: ignore[arg-type]
    assert bad.value.param == "size"
    pending = client.videos.create(prompt="Not finished yet", seconds="4")
    with pytest.raises(openai.ConflictError):
        client.videos.download_content(pending.id)
    other = OpenAI(api_key=tenant.api_key, base_url=f"{stack.gateway_url}/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError):  # another tenant's video is no source for a remix
        other.videos.remix(pending.id, prompt="Mine now")
    with pytest.raises(openai.AuthenticationError):
        OpenAI(api_key="rfk_wrong", base_url=f"{stack.gateway_url}/v1").videos.list()
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve("whe_" + "0" * 24)
    client.videos.delete(pending.id)
