"""Local content-addressed store for media (the default object storage driver).

Objects live at <root>/sha256/<aa>/<digest><suffix> and are named by URIs `cas://sha256/<digest><suffix>`.
Writes are atomic (copy to a temp file, fsync, rename), so a crash never leaves a half object.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_URI = re.compile(r"^cas://sha256/([0-9a-f]{64})(\.[a-z0-9]{1,8})?$")


class ContentNotFound(Exception):
    pass


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
    def __init__(self, root: Path, max_object_bytes: int = 2 * 1024**3) -> None:
        self.root = root
        self.max_object_bytes = max_object_bytes
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
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = self.scratch_dir() / f".{digest}.{os.getpid()}.partial"
            shutil.copyfile(source, staging)
            with staging.open("rb") as f:
                os.fsync(f.fileno())
            staging.replace(target)
        return StoredObject(uri=f"cas://sha256/{digest}{suffix}", sha256=digest, size=size)

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
