from __future__ import annotations

import contextlib
import errno
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelforge_core import media
from reelforge_core.content import ContentNotFound, ContentStore, StoreFull
from reelforge_core.transient import is_transient


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


def test_a_write_into_the_operators_reserve_is_refused_as_store_full(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"x" * 4096)
    store = ContentStore(tmp_path / "store")
    store.min_free_bytes = store.free_bytes()  # any write would eat into the reserve
    with pytest.raises(StoreFull) as raised:
        store.put(source)
    assert raised.value.errno == errno.ENOSPC
    assert is_transient(raised.value)  # consumers wait it out rather than fail the job
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    store.min_free_bytes = 0
    assert store.put(source).size == 4096


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), where the sandbox lets us mount one."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_store_full_leaves_no_partial_object_and_recovers(tiny_disk: Path, tmp_path: Path) -> None:
    store = ContentStore(tiny_disk / "store")
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\x01" * (2 * 1024 * 1024))
    with pytest.raises(StoreFull):
        store.put(big)
    assert list((tiny_disk / "store" / "tmp").iterdir()) == []  # the partial copy is gone
    small = tmp_path / "small.mp4"
    small.write_bytes(b"\x02" * 100_000)
    assert store.path_of(store.put(small).uri).read_bytes() == small.read_bytes()


@pytest.mark.asyncio
async def test_ffmpeg_writing_to_a_full_disk_raises_store_full(tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with pytest.raises(StoreFull):
        await media.run_tool([media.FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
                              "-t", "4", "-y", media.file_arg(tiny_disk / "out.mp4")], timeout_s=60)
