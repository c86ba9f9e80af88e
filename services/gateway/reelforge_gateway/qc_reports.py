"""QC reports from postprocess.v1.result, kept per job for the partner (tenant-scoped reads).

The gateway reads the postprocess result itself (its own consumer group) rather than having the
orchestrator relay the report: the report is postprocess's, and the job's status path stays as it is.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import asyncpg

from reelforge.postprocess.v1 import postprocess_pb2
from reelforge_core.kafka import Event, PoisonMessage
from reelforge_gateway import validation

log = logging.getLogger(__name__)
CONSUMER_GROUP = "gateway-qc"
_ATTEMPT = re.compile(r"/r(\d+)$")
_SUMMARY_MEASURES = ("duration_s", "width", "height", "fps", "integrated_lufs", "true_peak_dbtp")


def render_attempt(render_id: str) -> int:
    """`<job id>/r<attempt>` -> attempt; 0 when the id carries none (older results)."""
    found = _ATTEMPT.search(render_id)
    return int(found.group(1)) if found else 0


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The verdict, the enforced checks that failed, and a few headline measures per output."""
    outputs = report.get("outputs") or []
    return {
        "passed": bool(report.get("passed")),
        "failures": [
            {
                "output": o.get("output"),
                "check": c.get("name"),
                "measured": c.get("measured"),
                "limit": c.get("limit"),
                "detail": c.get("detail") or None,
            }
            for o in outputs
            for c in o.get("checks") or []
            if c.get("enforced") and not c.get("passed")
        ],
        "outputs": [
            {
                "output": o.get("output"),
                "passed": bool(o.get("passed")),
                **{k: (o.get("measures") or {}).get(k) for k in _SUMMARY_MEASURES},
            }
            for o in outputs
        ],
    }


async def record(pool: asyncpg.Pool, result: postprocess_pb2.PostprocessResult) -> bool:
    """Stores the result's report for the job (of that tenant); True if it is now the job's report."""
    try:
        report = json.loads(result.qc_report_json)
    except json.JSONDecodeError as exc:
        raise PoisonMessage("PostprocessResult with a malformed qc_report_json") from exc
    if not isinstance(report, dict):
        raise PoisonMessage("PostprocessResult whose qc_report_json is not an object")
    stored = await pool.fetchval(
        "INSERT INTO qc_reports (job_id, tenant_id, render_id, render_attempt, passed, summary, report)"
        " SELECT job_id, tenant_id, $3, $4, $5, $6::jsonb, $7::jsonb FROM jobs WHERE job_id = $1 AND tenant_id = $2"
        " ON CONFLICT (job_id) DO UPDATE SET render_id = EXCLUDED.render_id,"
        " render_attempt = EXCLUDED.render_attempt, passed = EXCLUDED.passed, summary = EXCLUDED.summary,"
        " report = EXCLUDED.report, checked_at = now()"
        " WHERE qc_reports.render_attempt < EXCLUDED.render_attempt"
        " OR (qc_reports.render_attempt = EXCLUDED.render_attempt AND qc_reports.report <> EXCLUDED.report)"
        " RETURNING true",
        result.job_id,
        result.tenant_id,
        result.render_id,
        render_attempt(result.render_id),
        result.qc_passed,
        json.dumps(summarize(report)),
        json.dumps(report),
    )
    return bool(stored)


class QcReportConsumer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, event: Event) -> None:
        result = event.parse(postprocess_pb2.PostprocessResult)
        if not result.job_id or not result.tenant_id:
            raise PoisonMessage("PostprocessResult without job_id or tenant_id")
        if not result.qc_report_json:  # the finish failed before QC (bad input, a tool failure)
            return
        if not await record(self._pool, result):
            log.info("QC report unchanged, older than the stored one, or for an unknown job")


async def summaries(pool: asyncpg.Pool, tenant_id: str, job_ids: list[str]) -> dict[str, asyncpg.Record]:
    wanted = [job_id for job_id in job_ids if validation.is_id(job_id)]
    if not wanted:
        return {}
    rows = await pool.fetch(
        "SELECT job_id, render_id, passed, summary, checked_at FROM qc_reports"
        " WHERE tenant_id = $1 AND job_id = ANY($2::text[])",
        tenant_id,
        wanted,
    )
    return {row["job_id"]: row for row in rows}


async def full_report(pool: asyncpg.Pool, tenant_id: str, job_id: str) -> asyncpg.Record | None:
    if not validation.is_id(job_id):
        return None
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT job_id, render_id, passed, report, checked_at FROM qc_reports WHERE job_id = $1 AND tenant_id = $2",
        job_id,
        tenant_id,
    )
    return row
