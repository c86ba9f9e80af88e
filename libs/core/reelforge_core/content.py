"""Local content-addressed store for media (the default object storage driver).

Objects live at <root>/sha256/<aa>/<digest><suffix> and are named by URIs `cas://sha256/<digest><suffix>`.
Writes are atomic (copy to a temp file, fsync, rename), so a crash never leaves a half object.

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
from dataclasses import dataclass
from pathlib import Path

_URI = re.compile(r"^cas://sha256/([0-9a-f]{64})(\.[a-z0-9]{1,8})?$")


class ContentNotFound(Exception):
    pass


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

    def put(self, source: Path) -> StoredObject:
        size = source.stat().st_size
        if size > self.max_object_bytes:
            raise ValueError(f"object of {size} bytes exceeds the {self.max_object_bytes} byte limit")
        digest = _digest(source)
        suffix = source.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,8}", source.suffix.lower()) else ""
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
        match = _URI.match(uri)
        if not match:
            raise ContentNotFound(f"not a content URI: {uri!r}")
        path = self._path(match.group(1), match.group(2) or "")
        if not path.is_file():
            raise ContentNotFound(uri)
        return path

    def _path(self, digest: str, suffix: str) -> Path:
        return self.root / "sha256" / digest[:2] / f"{digest}{suffix}"
