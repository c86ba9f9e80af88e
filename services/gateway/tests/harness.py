"""The in-process gateway the gateway's tests talk to (see conftest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core.content import ContentStore
from reelforge_gateway import store
from reelforge_gateway.secret_box import SecretBox


@dataclass
class Gateway:
    url: str
    dsn: str
    content: ContentStore
    api_key: str
    tenant_id: str
    loop: asyncio.AbstractEventLoop
    pool: asyncpg.Pool
    secret_box: SecretBox
    sequences: dict[str, int] = field(default_factory=dict)

    def run(self, coro: Any) -> Any:
        """Runs a coroutine on the server's loop (where the pool lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def new_tenant(self, name: str) -> tuple[str, str]:
        tenant_id, key = self.run(store.create_tenant(self.pool, name))
        return tenant_id, key.plaintext

    def advance(self, job_id: str, state: str, progress: int = 0, output_uri: str = "",
                error_code: str = "", error_message: str = "", thumbnail_uri: str = "", sprite_uri: str = "") -> None:
        """What the orchestrator's jobs.v1.status event would do to the partner's view."""
        self.sequences[job_id] = self.sequences.get(job_id, 0) + 1
        at = Timestamp()
        at.GetCurrentTime()
        event = jobs_pb2.JobStatusChanged(
            job_id=job_id, state=jobs_pb2.JobState.Value(f"JOB_STATE_{state.upper()}"), progress_percent=progress,
            at=at, sequence=self.sequences[job_id], output_uri=output_uri, error_code=error_code,
            error_message=error_message, output_seconds=1.0 if output_uri else 0.0, thumbnail_uri=thumbnail_uri,
            sprite_uri=sprite_uri,
        )
        assert self.run(store.apply_status(self.pool, event))

    def complete(self, job_id: str, video: Path) -> str:
        uri = self.content.put(video).uri
        self.advance(job_id, "rendering", 40)
        self.advance(job_id, "completed", 100, output_uri=uri)
        return uri
