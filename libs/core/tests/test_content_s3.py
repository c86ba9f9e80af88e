"""The S3 content store driver against a real S3-protocol server over HTTP: moto's server mode with
authentication on, so every request's SigV4 signature is recomputed by the server (with botocore) and
checked against an IAM user's key. Only the first three calls (creating that user) go unauthenticated."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from reelforge_core.content import (
    ContentNotFound,
    ContentStore,
    ContentStoreError,
    S3ContentStore,
    open_content_store,
)
from reelforge_core.s3 import S3Client, S3Config, sign
from reelforge_core.settings import ServiceSettings

BUCKET = "reelforge-content"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(config: S3Config, method: str, url: str, body: bytes = b"", service: str = "s3",
          headers: dict[str, str] | None = None) -> httpx.Response:
    signed = sign(method, url, headers or {}, hashlib.sha256(body).hexdigest(), config, service=service)
    return httpx.request(method, url, content=body, headers=signed, timeout=30)


def _iam(config: S3Config, action: str, **params: str) -> str:
    body = urlencode({"Action": action, "Version": "2010-05-08", **params}).encode()
    response = _call(config, "POST", f"{config.endpoint}/", body, "iam",
                     {"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Config]:
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION": "false"}
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120  # the machine is shared: imports can be slow under load
        while True:  # a TCP connect only: an HTTP request could count as one of the unauthenticated calls
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        bootstrap = S3Config(f"http://127.0.0.1:{port}", BUCKET, "AKIABOOTSTRAP0000000", "unused")
        _iam(bootstrap, "CreateUser", UserName="reelforge")
        created = _iam(bootstrap, "CreateAccessKey", UserName="reelforge")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        _iam(bootstrap, "PutUserPolicy", UserName="reelforge", PolicyName="content",
             PolicyDocument=json.dumps(policy))
        key_id = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", created)
        secret = re.search(r"<SecretAccessKey>([^<]+)</SecretAccessKey>", created)
        assert key_id and secret
        config = replace(bootstrap, access_key_id=key_id.group(1), secret_access_key=secret.group(1))
        made = _call(config, "PUT", f"{config.endpoint}/{BUCKET}")
        assert made.status_code == 200, made.text
        yield config
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def _store(config: S3Config, root: Path, **kwargs: int) -> S3ContentStore:
    return S3ContentStore(root, S3Client(config), prefix="media", **kwargs)


def _video(tmp_path: Path, size: int = 3 * 1024 * 1024 + 17) -> Path:
    path = tmp_path / "render.mp4"
    path.write_bytes(os.urandom(size))  # several upload chunks
    return path


def test_put_streams_the_object_and_reads_it_back_through_the_cache(s3: S3Config, tmp_path: Path) -> None:
    source = _video(tmp_path)
    writer = _store(s3, tmp_path / "writer")
    stored = writer.put(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert stored.uri == f"cas://sha256/{digest}.mp4" == ContentStore(tmp_path / "local").put(source).uri
    assert writer.client.head(f"media/sha256/{digest[:2]}/{digest}.mp4") == source.stat().st_size
    assert writer.put(source) == stored  # already there: not sent again
    # another machine, empty cache: downloads once, verifies, then serves the cached file
    reader = _store(s3, tmp_path / "reader")
    path = reader.path_of(stored.uri)
    assert path.read_bytes() == source.read_bytes()
    assert path.is_relative_to(tmp_path / "reader")
    offline = _store(replace(s3, endpoint="http://127.0.0.1:9"), tmp_path / "reader")
    assert offline.path_of(stored.uri) == path
    assert reader.exists(stored.uri) and not reader.exists("cas://sha256/" + "0" * 64 + ".mp4")


def test_the_server_checks_the_signature(s3: S3Config, tmp_path: Path) -> None:
    source = _video(tmp_path, 1000)
    uri = _store(s3, tmp_path / "honest").put(source).uri
    forged = _store(replace(s3, secret_access_key="not-the-secret"), tmp_path / "store")
    with pytest.raises(ContentStoreError, match="SignatureDoesNotMatch"):
        forged.path_of(uri)
    with pytest.raises(ContentStoreError, match="403"):  # HEAD: the refusal has no body to name the reason
        forged.put(source)


def test_a_missing_object_is_not_found(s3: S3Config, tmp_path: Path) -> None:
    with pytest.raises(ContentNotFound):
        _store(s3, tmp_path / "s").path_of("cas://sha256/" + "ab" * 32 + ".mp4")
    with pytest.raises(ContentNotFound):
        _store(s3, tmp_path / "s").path_of("s3://bucket/key")


def test_size_limits_on_write_and_read(s3: S3Config, tmp_path: Path) -> None:
    source = _video(tmp_path, 4096)
    with pytest.raises(ValueError, match="exceeds the 1000 byte limit"):
        _store(s3, tmp_path / "small", max_object_bytes=1000).put(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert _store(s3, tmp_path / "x").client.head(f"media/sha256/{digest[:2]}/{digest}.mp4") is None
    uri = _store(s3, tmp_path / "big").put(source).uri
    small = _store(s3, tmp_path / "small", max_object_bytes=1000)
    with pytest.raises(ContentStoreError, match="EntityTooLarge"):
        small.path_of(uri)
    assert not list((tmp_path / "small").rglob("*.mp4"))


def test_bytes_that_do_not_match_their_name_are_refused(s3: S3Config, tmp_path: Path) -> None:
    """An object whose bytes are not what its content address says (tampered, or a bug) is never served."""
    store = _store(s3, tmp_path / "s")
    impostor = _video(tmp_path, 2048)
    claimed = hashlib.sha256(b"something else").hexdigest()
    real = hashlib.sha256(impostor.read_bytes()).hexdigest()
    store.client.put_file(f"media/sha256/{claimed[:2]}/{claimed}.mp4", impostor, real, 2048, "video/mp4")
    with pytest.raises(ContentStoreError, match="SHA-256"):
        store.path_of(f"cas://sha256/{claimed}.mp4")
    assert not list((tmp_path / "s").rglob("*.mp4"))


def test_settings_select_the_driver(s3: S3Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFORGE_SERVICE_CONTENT_DIR", str(tmp_path / "c"))
    assert type(open_content_store(ServiceSettings())) is ContentStore
    monkeypatch.setenv("REELFORGE_SERVICE_CONTENT_DRIVER", "s3")
    with pytest.raises(ValueError, match="content_s3_endpoint, content_s3_bucket"):
        open_content_store(ServiceSettings())
    for name, value in [("ENDPOINT", s3.endpoint), ("BUCKET", s3.bucket), ("ACCESS_KEY_ID", s3.access_key_id),
                        ("SECRET_ACCESS_KEY", s3.secret_access_key), ("PREFIX", "media")]:
        monkeypatch.setenv(f"REELFORGE_SERVICE_CONTENT_S3_{name}", value)
    store = open_content_store(ServiceSettings())
    assert isinstance(store, S3ContentStore)
    assert s3.secret_access_key not in repr(store.client.config)
    uri = store.put(_video(tmp_path, 100)).uri
    assert _store(s3, tmp_path / "other").path_of(uri).stat().st_size == 100
