"""Per-task context (job id, tenant id) that every log line carries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_job_id: ContextVar[str | None] = ContextVar("job_id", default=None)
_tenant_id: ContextVar[str | None] = ContextVar("tenant_id", default=None)


def current_job_id() -> str | None:
    return _job_id.get()


def current_tenant_id() -> str | None:
    return _tenant_id.get()


@contextlib.contextmanager
def job_context(job_id: str | None = None, tenant_id: str | None = None) -> Iterator[None]:
    tokens = []
    if job_id is not None:
        tokens.append((_job_id, _job_id.set(job_id)))
    if tenant_id is not None:
        tokens.append((_tenant_id, _tenant_id.set(tenant_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
