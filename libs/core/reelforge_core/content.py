"""Content-addressed store for media: a local directory (the default driver) or an S3-compatible bucket.

Objects are named by URIs `cas://sha256/<digest><suffix>` whatever the driver: the name says what the bytes
are, not where they live, so job rows and events stay valid when an operator moves from local disk to a
bucket (copy the objects; nothing to rewrite), and both drivers dedupe identical outputs for free.
Locally, objects live at <root>/sha256/<aa>/<digest><suffix>; writes are atomic (copy to a temp file,
fsync, rename), so a crash never leaves a half object. The S3 driver keeps the same layout as object keys
under an optional prefix, and uses <root> as a read-through cache: `path_of` downloads an object once,
checks its SHA-256 against its name, and hands out the cached file (FFmpeg and file responses need a
path). Select it with `CONTENT_DRIVER=s3` and the `CONTENT_S3_*` settings (`open_content_store`).

Both drivers do I/O in `put` and `path_of`: async callers run them in a thread.

A full store (no space left, a disk quota, or less free space than the operator's reserve
`min_free_bytes`) raises `StoreFull`, an OSError: callers treat it as transient and retry once space
returns (the Kafka consumers' retry policy does so for every OSError), never as a failed job.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from reelforge_core.s3 import S3Client, S3Config, S3Error, S3NotFound

if TYPE_CHECKING:
    from reelforge_core.settings import ServiceSettings

_URI = re.compile(r"^cas://sha256/([0-9a-f]{64})(\.[a-z0-9]{1,8})?$")
_CONTENT_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp",
                  ".vtt": "text/vtt", ".srt": "application/x-subrip", ".json": "application/json"}


class ContentNotFound(Exception):
    pass


class ContentStoreError(OSError):
    """The object storage failed (not a missing object): retry later, never a partner's fault. An OSError,
    so Kafka consumers wait it out (transient) instead of dead-lettering the record."""


class ContentReader(Protocol):
    def path_of(self, uri: str) -> Path: ...


class StoreFull(OSError):
    """The content store has no room for a write; waiting for space (and retrying) is the remedy."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def raise_if_no_space(exc: BaseException) -> None:
    """Re-raises a write error that means "disk full" as StoreFull (PyAV's errors carry the errno too)."""
    if isinstance(exc, StoreFull):
        raise exc
    if getattr(exc, "errno", None) in _NO_SPACE or "No space left on device" in str(exc):
        raise StoreFull(f"the content store is full: {exc}") from exc


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str
    size: int


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ContentStore:
    def __init__(self, root: Path, max_object_bytes: int = 2 * 1024**3, min_free_bytes: int = 0) -> None:
        self.root = root
        self.max_object_bytes = max_object_bytes
        self.min_free_bytes = min_free_bytes  # writes that would leave less free space than this are refused
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def scratch_dir(self) -> Path:
        """A directory on the store's filesystem for work files, so `put` can rename instead of copy."""
        return self.root / "tmp"

    def _measure(self, source: Path) -> tuple[int, str, str]:
        size = source.stat().st_size
        if size > self.max_object_bytes:
            raise ValueError(f"object of {size} bytes exceeds the {self.max_object_bytes} byte limit")
        suffix = source.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,8}", source.suffix.lower()) else ""
        return size, _digest(source), suffix

    def exists(self, uri: str) -> bool:
        try:
            self.path_of(uri)
        except ContentNotFound:
            return False
        return True

    def put(self, source: Path) -> StoredObject:
        size, digest, suffix = self._measure(source)
        target = self._path(digest, suffix)
        if not target.exists():
            self._write(source, target, digest, size)
        return StoredObject(uri=f"cas://sha256/{digest}{suffix}", sha256=digest, size=size)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def _write(self, source: Path, target: Path, digest: str, size: int) -> None:
        if self.min_free_bytes and self.free_bytes() - size < self.min_free_bytes:
            raise StoreFull(f"the content store keeps {self.min_free_bytes} bytes free and has "
                            f"{self.free_bytes()}; refusing a {size} byte object")
        staging = self.scratch_dir() / f".{digest}.{os.getpid()}.partial"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging)
            with staging.open("rb") as f:
                os.fsync(f.fileno())
            staging.replace(target)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            raise_if_no_space(exc)
            raise

    def path_of(self, uri: str) -> Path:
        path = self._path(*parse_uri(uri))
        if not path.is_file():
            raise ContentNotFound(uri)
        return path

    def _path(self, digest: str, suffix: str) -> Path:
        return self.root / relative_name(digest, suffix)


def parse_uri(uri: str) -> tuple[str, str]:
    """(digest, suffix) of a content URI; ContentNotFound if it is not one."""
    match = _URI.match(uri)
    if not match:
        raise ContentNotFound(f"not a content URI: {uri!r}")
    return match.group(1), match.group(2) or ""


def relative_name(digest: str, suffix: str) -> str:
    return f"sha256/{digest[:2]}/{digest}{suffix}"


class S3ContentStore(ContentStore):
    """Objects in an S3-compatible bucket; `root` is scratch space and the read-through cache, kept
    under `cache_max_bytes` by dropping the files least recently handed out (and not in the last
    CACHE_GRACE_SECONDS, so a path just returned is never pulled from under its reader)."""

    CACHE_GRACE_SECONDS = 600.0

    def __init__(self, root: Path, client: S3Client, prefix: str = "", max_object_bytes: int = 2 * 1024**3,
                 cache_max_bytes: int = 10 * 1024**3) -> None:
        super().__init__(root, max_object_bytes)
        self.client = client
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.cache_max_bytes = cache_max_bytes

    def key(self, digest: str, suffix: str) -> str:
        return self.prefix + relative_name(digest, suffix)

    def put(self, source: Path) -> StoredObject:
        size, digest, suffix = self._measure(source)
        key = self.key(digest, suffix)
        try:
            if self.client.head(key) != size:  # content-addressed: an object of that name and size is this one
                self.client.put_file(key, source, digest, size, _CONTENT_TYPES.get(suffix, "application/octet-stream"))
        except S3Error as exc:
            raise ContentStoreError(f"storing {key}: {exc}") from exc
        return StoredObject(uri=f"cas://sha256/{digest}{suffix}", sha256=digest, size=size)

    def exists(self, uri: str) -> bool:
        digest, suffix = parse_uri(uri)
        if self._path(digest, suffix).is_file():
            return True
        try:
            return self.client.head(self.key(digest, suffix)) is not None
        except S3Error as exc:
            raise ContentStoreError(f"looking up {uri}: {exc}") from exc

    def path_of(self, uri: str) -> Path:
        digest, suffix = parse_uri(uri)
        cached = self._path(digest, suffix)
        if cached.is_file():
            os.utime(cached)  # recently used: last to be evicted
            return cached
        staging = self.scratch_dir() / f".{digest}.{os.getpid()}.{time.monotonic_ns()}.download"
        try:
            got = self.client.get_to_file(self.key(digest, suffix), staging, self.max_object_bytes)
            if got != digest:
                raise ContentStoreError(f"{uri}: the bucket returned bytes with SHA-256 {got}")
            cached.parent.mkdir(parents=True, exist_ok=True)
            staging.replace(cached)
        except S3NotFound:
            raise ContentNotFound(uri) from None
        except S3Error as exc:
            raise ContentStoreError(f"reading {uri}: {exc}") from exc
        finally:
            staging.unlink(missing_ok=True)
        self._trim_cache(keep=cached)
        return cached

    def _trim_cache(self, keep: Path) -> None:
        files = [(p.stat().st_mtime, p.stat().st_size, p) for p in (self.root / "sha256").glob("*/*") if p.is_file()]
        total = sum(size for _, size, _ in files)
        cutoff = time.time() - self.CACHE_GRACE_SECONDS
        for mtime, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.cache_max_bytes or mtime > cutoff:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def open_content_store(settings: ServiceSettings) -> ContentStore:
    """The store the settings select: local (default) or S3 (`CONTENT_DRIVER=s3`)."""
    if settings.content_driver == "local":
        return ContentStore(settings.content_dir, settings.content_max_object_bytes, settings.content_min_free_bytes)
    missing = [name for name in ("endpoint", "bucket", "access_key_id", "secret_access_key")
               if not getattr(settings, f"content_s3_{name}")]
    if missing:
        raise ValueError("content_driver=s3 needs " + ", ".join(f"content_s3_{name}" for name in missing))
    assert settings.content_s3_access_key_id is not None and settings.content_s3_secret_access_key is not None
    config = S3Config(
        endpoint=settings.content_s3_endpoint, bucket=settings.content_s3_bucket,
        access_key_id=settings.content_s3_access_key_id.get_secret_value(),
        secret_access_key=settings.content_s3_secret_access_key.get_secret_value(),
        region=settings.content_s3_region, addressing=settings.content_s3_addressing,
    )
    return S3ContentStore(settings.content_dir, S3Client(config), settings.content_s3_prefix,
                          settings.content_max_object_bytes, settings.content_cache_max_bytes)
