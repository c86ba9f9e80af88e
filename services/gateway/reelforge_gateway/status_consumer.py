"""Keeps the partner-facing job view current from jobs.v1.status."""

from __future__ import annotations

import logging

import asyncpg

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_gateway import store

log = logging.getLogger(__name__)


class StatusConsumer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, event: Event) -> None:
        status = event.parse(jobs_pb2.JobStatusChanged)
        if not status.job_id or status.sequence == 0:
            raise PoisonMessage("JobStatusChanged without job_id or sequence")
        if not await store.apply_status(self._pool, status):
            log.info("status event already applied or older than the job's view", extra={"sequence": status.sequence})
