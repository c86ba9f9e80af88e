from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reelforge_core.content import ContentNotFound, ContentStore


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    source = tmp_path / "a.mp4"
    source.write_bytes(b"video bytes")
    first = store.put(source)
    second = store.put(source)
    assert first == second
    assert first.sha256 == hashlib.sha256(b"video bytes").hexdigest()
    assert first.uri == f"cas://sha256/{first.sha256}.mp4"
    assert store.path_of(first.uri).read_bytes() == b"video bytes"
    assert not list(store.scratch_dir().iterdir())


@pytest.mark.parametrize(
    "uri",
    ["", "file:///etc/passwd", "cas://sha256/../../etc/passwd", "cas://sha256/" + "0" * 64 + "/../x",
     "cas://sha256/" + "g" * 64],
)
def test_foreign_or_traversing_uris_are_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ContentNotFound):
        ContentStore(tmp_path).path_of(uri)


def test_missing_object(tmp_path: Path) -> None:
    with pytest.raises(ContentNotFound):
        ContentStore(tmp_path).path_of("cas://sha256/" + "a" * 64 + ".mp4")


def test_size_limit(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match="limit"):
        ContentStore(tmp_path / "s", max_object_bytes=10).put(source)
