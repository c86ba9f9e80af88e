"""The official `openai` SDK, unmodified, against the gateway's /v1/videos (real server, real Postgres)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from services.gateway.tests.harness import Gateway


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(api_key=gateway.api_key, base_url=f"{gateway.url}/v1", max_retries=0)


def test_create_multipart_retrieve_and_shapes(client: OpenAI, gateway: Gateway) -> None:
    video = client.videos.create(prompt="A water purifier on a kitchen counter", model="sora-2-pro",
                                 seconds="8", size="1024x1792")
    assert video.object == "video"
    assert video.status == "queued"
    assert video.progress == 0
    assert video.model == "sora-2-pro"
    assert (video.seconds, video.size) == ("8", "1024x1792")
    assert video.prompt == "A water purifier on a kitchen counter"
    assert video.completed_at is None and video.error is None
    again = client.videos.retrieve(video.id)
    assert again.model_dump() == video.model_dump()
    # The requested name is the route the orchestrator schedules on (model_routes) and billing prices.
    row = gateway.run(gateway.pool.fetchrow("SELECT model, requested_model, width, height FROM jobs WHERE job_id = $1",
                                            video.id))
    assert dict(row) == {"model": "sora-2-pro", "requested_model": "sora-2-pro", "width": 1024, "height": 1792}


def test_defaults_follow_openai(client: OpenAI) -> None:
    video = client.videos.create(prompt="Toy robot")
    assert (video.model, video.seconds, video.size) == ("sora-2", "4", "720x1280")


def test_create_as_json(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/videos", headers={"Authorization": f"Bearer {gateway.api_key}"},
                          json={"prompt": "Speaker", "seconds": "12", "size": "1792x1024"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["seconds"], body["size"], body["status"]) == ("12", "1792x1024", "queued")


def test_input_reference_upload_is_stored(client: OpenAI, gateway: Gateway, sample_png: Path) -> None:
    with sample_png.open("rb") as image:
        video = client.videos.create(prompt="This T-shirt, turning", input_reference=image)
    uri = gateway.run(gateway.pool.fetchval("SELECT input_reference_uri FROM jobs WHERE job_id = $1", video.id))
    assert uri.startswith("cas://sha256/") and uri.endswith(".png")
    assert gateway.content.path_of(uri).read_bytes() == sample_png.read_bytes()


def test_input_reference_that_is_not_an_image(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt="x", input_reference=("notes.txt", b"hello", "text/plain"))
    assert caught.value.code == "invalid_input_reference"
    assert caught.value.param == "input_reference"


def test_create_and_poll_then_download(client: OpenAI, gateway: Gateway, sample_video: Path) -> None:
    created = client.videos.create(prompt="A speaker pulsing to music", seconds="4")

    def orchestrate() -> None:
        gateway.advance(created.id, "admitted", 5)
        gateway.complete(created.id, sample_video)

    threading.Timer(0.3, orchestrate).start()
    done = client.videos.poll(created.id)
    assert done.status == "completed" and done.progress == 100
    assert done.completed_at is not None and done.completed_at >= done.created_at
    content = client.videos.download_content(done.id)
    assert content.content == sample_video.read_bytes()
    assert client.videos.download_content(done.id, variant="video").content == sample_video.read_bytes()
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.download_content(done.id, variant="thumbnail")
    assert caught.value.code == "variant_not_available"


def test_create_and_poll_failed(client: OpenAI, gateway: Gateway) -> None:
    threading.Timer(0.3, lambda: None).start()
    created = client.videos.create(prompt="Bad")
    gateway.advance(created.id, "rendering", 20)
    in_progress = client.videos.retrieve(created.id)
    assert (in_progress.status, in_progress.progress) == ("in_progress", 20)
    gateway.advance(created.id, "failed", 20, error_code="timeout", error_message="The render timed out")
    failed = client.videos.poll(created.id)
    assert failed.status == "failed"
    assert failed.error is not None and (failed.error.code, failed.error.message) == ("timeout", "The render timed out")


def test_list_auto_paginates_in_order(client: OpenAI) -> None:
    ids = [client.videos.create(prompt=f"Product {i}").id for i in range(7)]
    newest_first = [video.id for video in client.videos.list(limit=3)]
    assert newest_first == list(reversed(ids))
    oldest_first = [video.id for video in client.videos.list(limit=2, order="asc")]
    assert oldest_first == ids
    page = client.videos.list(limit=3)
    assert page.has_more is True and len(page.data) == 3
    after = client.videos.list(limit=3, after=page.data[-1].id)
    assert [v.id for v in after.data] == list(reversed(ids))[3:6]


def test_delete(client: OpenAI) -> None:
    video = client.videos.create(prompt="Ephemeral")
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(video.id)
    assert video.id not in [v.id for v in client.videos.list()]


def test_errors_map_to_sdk_exceptions(client: OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.videos.retrieve("job_doesnotexist")
    assert not_found.value.code == "video_not_found"
    assert not_found.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(prompt="x", seconds="5")  # type: ignore[arg-type]
    assert bad.value.param == "seconds"
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.videos.create(prompt="x", model="sora-9")
    assert bad_model.value.param == "model"
    with pytest.raises(openai.BadRequestError):
        client.videos.create(prompt="   ")
    bad_key = OpenAI(api_key="rfk_0123456789_" + "a" * 43, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as unauthorised:
        bad_key.videos.list()
    assert unauthorised.value.code == "invalid_api_key"
    not_ready = client.videos.create(prompt="Not yet")
    with pytest.raises(openai.ConflictError) as conflict:
        client.videos.download_content(not_ready.id)
    assert conflict.value.code == "video_not_ready"


def test_error_envelope_is_openais(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/videos/nope", headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert response.status_code == 404
    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    too_big = httpx.post(f"{gateway.url}/v1/videos", headers={"Authorization": f"Bearer {gateway.api_key}"},
                         files={"input_reference": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * (21 * 1024 * 1024))},
                         data={"prompt": "x"})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "payload_too_large"


def test_another_tenants_video_is_not_found(client: OpenAI, gateway: Gateway) -> None:
    video = client.videos.create(prompt="Private")
    _, other_key = gateway.new_tenant("other")
    other = OpenAI(api_key=other_key, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        other.videos.delete(video.id)
    with pytest.raises(openai.NotFoundError):
        other.videos.download_content(video.id)
    assert list(other.videos.list()) == []
    with pytest.raises(openai.BadRequestError):
        other.videos.list(after=video.id)
