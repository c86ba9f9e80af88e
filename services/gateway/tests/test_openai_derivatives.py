"""Remix, edits, extensions and the preview download variants through the official `openai` SDK
(real server, real Postgres; the orchestrator's status events are applied by the harness)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import Video

from reelforge.jobs.v1 import jobs_pb2
from reelforge.postprocess.v1 import postprocess_pb2
from services.gateway.tests.harness import Gateway


@pytest.fixture
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(api_key=gateway.api_key, base_url=f"{gateway.url}/v1", max_retries=0)


@pytest.fixture(scope="module")
def poster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "poster.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=blue:size=64x36", "-frames:v", "1",
                    "-y", str(path)], check=True)
    return path


def _submitted(gateway: Gateway, job_id: str) -> jobs_pb2.JobSubmitted:
    payload = gateway.run(gateway.pool.fetchval(
        "SELECT payload FROM outbox WHERE key = $1 AND topic = 'jobs.v1.submitted'", job_id.encode()))
    return jobs_pb2.JobSubmitted.FromString(payload)


def _by_id(client: OpenAI, route: str, **body: object) -> Video:
    """Edits and extensions of a video by id, sent as JSON: this SDK's `videos.edit(video={"id": ...})`
    refuses a dict client-side (it only accepts files in that slot), so callers use its generic `post`."""
    return client.post(f"/videos/{route}", body=body, cast_to=Video)


def _completed(client: OpenAI, gateway: Gateway, sample_video: Path, **create: str) -> tuple[str, str]:
    video = client.videos.create(prompt="A water purifier", **create)  # type: ignore[arg-type]
    return video.id, gateway.complete(video.id, sample_video)


def test_openai_jobs_ask_postprocess_for_previews_and_serve_them(
        client: OpenAI, gateway: Gateway, sample_video: Path, poster: Path) -> None:
    video = client.videos.create(prompt="A speaker")
    options = postprocess_pb2.PostprocessOptions.FromString(_submitted(gateway, video.id).spec.postprocess_options)
    assert options.thumbnails.thumbnail and options.thumbnails.sprite
    output = gateway.content.put(sample_video).uri
    thumb = gateway.content.put(poster).uri
    gateway.advance(video.id, "completed", 100, output_uri=output, thumbnail_uri=thumb, sprite_uri=thumb)
    assert client.videos.download_content(video.id, variant="thumbnail").content == poster.read_bytes()
    assert client.videos.download_content(video.id, variant="spritesheet").content == poster.read_bytes()
    assert client.videos.download_content(video.id).content == sample_video.read_bytes()
    native = httpx.get(f"{gateway.url}/v1/jobs/{video.id}/content", params={"variant": "thumbnail"},
                       headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert native.status_code == 200 and native.headers["content-type"] == "image/jpeg"
    assert native.content == poster.read_bytes()


def test_remix_is_a_new_job_from_the_source(client: OpenAI, gateway: Gateway, sample_video: Path) -> None:
    source_id, source_uri = _completed(client, gateway, sample_video, model="sora-2-pro", seconds="8",
                                       size="1280x720")
    remix = client.videos.remix(source_id, prompt="The same purifier, at night")
    assert remix.id != source_id and remix.status == "queued"
    assert (remix.remixed_from_video_id, remix.model, remix.seconds, remix.size) == (
        source_id, "sora-2-pro", "8", "1280x720")
    assert remix.prompt == "The same purifier, at night"
    spec = _submitted(gateway, remix.id).spec
    assert (spec.source_job_id, spec.source_operation, spec.input_reference_uri) == (source_id, "remix", source_uri)
    assert client.videos.retrieve(remix.id).remixed_from_video_id == source_id
    with pytest.raises(openai.BadRequestError) as empty:
        client.videos.remix(source_id, prompt="  ")
    assert empty.value.param == "prompt"


def test_remix_needs_a_completed_video_of_this_tenant(client: OpenAI, gateway: Gateway) -> None:
    pending = client.videos.create(prompt="Not yet")
    with pytest.raises(openai.ConflictError) as not_ready:
        client.videos.remix(pending.id, prompt="x")
    assert not_ready.value.code == "video_not_ready"
    with pytest.raises(openai.NotFoundError):
        client.videos.remix("job_" + "f" * 24, prompt="x")
    _, other_key = gateway.new_tenant("other")
    other = OpenAI(api_key=other_key, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError) as foreign:
        other.videos.remix(pending.id, prompt="x")
    assert foreign.value.code == "video_not_found"
    with pytest.raises(openai.NotFoundError):
        _by_id(other, "edits", prompt="x", video={"id": pending.id})
    with pytest.raises(openai.NotFoundError):
        _by_id(other, "extensions", prompt="x", seconds="4", video={"id": pending.id})


def test_edit_by_id_and_by_upload(client: OpenAI, gateway: Gateway, sample_video: Path) -> None:
    source_id, source_uri = _completed(client, gateway, sample_video, seconds="4", size="720x1280")
    edited = _by_id(client, "edits", prompt="Make it blue", video={"id": source_id})
    assert (edited.seconds, edited.size, edited.remixed_from_video_id) == ("4", "720x1280", None)
    spec = _submitted(gateway, edited.id).spec
    assert (spec.source_job_id, spec.source_operation, spec.input_reference_uri) == (source_id, "edit", source_uri)
    with sample_video.open("rb") as upload:  # 320x240, 1 s
        uploaded = client.videos.edit(prompt="Make it red", video=upload)
    assert (uploaded.seconds, uploaded.size) == ("1", "1792x1024")  # the closest OpenAI shape to 4:3
    spec = _submitted(gateway, uploaded.id).spec
    assert spec.source_job_id == "" and spec.source_operation == "edit"
    assert gateway.content.path_of(spec.input_reference_uri).read_bytes() == sample_video.read_bytes()
    with pytest.raises(openai.BadRequestError) as not_video:
        client.videos.edit(prompt="x", video=("a.png", b"\x89PNG\r\n\x1a\n0000", "image/png"))
    assert not_video.value.param == "video"


def test_extension_is_the_stitched_total(client: OpenAI, gateway: Gateway, sample_video: Path) -> None:
    source_id, source_uri = _completed(client, gateway, sample_video, seconds="12")
    extended = _by_id(client, "extensions", prompt="And then it pours", seconds="8", video={"id": source_id})
    assert extended.seconds == "20"
    spec = _submitted(gateway, extended.id).spec
    assert (spec.seconds, spec.source_operation, spec.input_reference_uri) == (20.0, "extension", source_uri)
    longer = _by_id(client, "extensions", prompt="More", seconds="20", video={"id": source_id})
    assert longer.seconds == "32"
    with pytest.raises(openai.BadRequestError) as bad_seconds:
        _by_id(client, "extensions", prompt="x", seconds="5", video={"id": source_id})
    with sample_video.open("rb") as upload:  # 1 s uploaded, extended by 4 s
        assert client.videos.extend(prompt="On", seconds="4", video=upload).seconds == "5"
    assert bad_seconds.value.param == "seconds"


def test_characters(client: OpenAI, gateway: Gateway, sample_video: Path) -> None:
    with sample_video.open("rb") as upload:
        created = client.videos.create_character(name="Captain Filter", video=upload)
    assert created.name == "Captain Filter" and created.id is not None and created.created_at > 0
    assert client.videos.get_character(created.id).model_dump() == created.model_dump()
    _, other_key = gateway.new_tenant("other")
    with pytest.raises(openai.NotFoundError):
        OpenAI(api_key=other_key, base_url=f"{gateway.url}/v1", max_retries=0).videos.get_character(created.id)
    with pytest.raises(openai.BadRequestError) as not_video:
        client.videos.create_character(name="x", video=("a.txt", b"hello", "text/plain"))
    assert not_video.value.param == "video"
