"""The partner's view of quality control: a summary on every job view, the full report at
GET /v1/jobs/{id}/qc. Tenant-scoped like every job read."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from reelforge_gateway import qc_reports
from reelforge_gateway.api.auth import Caller, authenticate, owned_job
from reelforge_gateway.api.problems import Problem

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class QcFailure(BaseModel):
    output: str | None = Field(description="main, or a rendition's name")
    check: str | None = Field(description="e.g. black, frozen, loudness, duration, av_sync")
    measured: float | str | None
    limit: float | str | None
    detail: str | None = None


class QcOutput(BaseModel):
    output: str | None
    passed: bool
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    integrated_lufs: float | None = None
    true_peak_dbtp: float | None = None


class QcSummary(BaseModel):
    passed: bool
    render_id: str = Field(description="The render the report is about (a failed check may cause a re-render)")
    checked_at: datetime
    failures: list[QcFailure]
    outputs: list[QcOutput]


class QcReport(BaseModel):
    object: str = "job.qc_report"
    job_id: str
    render_id: str
    passed: bool
    checked_at: datetime
    thresholds: dict[str, Any] = Field(
        default_factory=dict,
        description="The thresholds QC applied (the job's postprocess.qc over its template's and the defaults)",
    )
    outputs: list[dict[str, Any]] = Field(
        description="Per output: measures (duration, size, fps, streams, A/V sync, black, frozen and silent "
        "stretches, loudness, true peak) and every check with its limit and verdict"
    )


def _summary(row: asyncpg.Record) -> QcSummary:
    return summary_of(row["render_id"], row["checked_at"], row["summary"])


def summary_of(render_id: str, checked_at: datetime, summary: str) -> QcSummary:
    return QcSummary(render_id=render_id, checked_at=checked_at, **json.loads(summary))


async def summaries(pool: asyncpg.Pool, tenant_id: str, job_ids: list[str]) -> dict[str, QcSummary]:
    rows = await qc_reports.summaries(pool, tenant_id, job_ids)
    return {job_id: _summary(row) for job_id, row in rows.items()}


def _not_found(job_id: str) -> Problem:
    return Problem(404, "job_not_found", "No such job", f"No job {job_id[:64]!r} for this API key's tenant")


_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}


@router.get(
    "/{job_id}/qc",
    response_model=QcReport,
    responses={
        404: {**_PROBLEM, "description": "No such job for this tenant, or no QC report yet"},
        401: {**_PROBLEM, "description": "Missing or invalid API key"},
    },
)
async def get_qc_report(job_id: str, request: Request, caller: Annotated[Caller, Depends(authenticate)]) -> QcReport:
    """The full quality control report of the job's latest finish. 404 `qc_report_not_ready` until
    postprocess has checked an output (a job that failed before finishing never gets one)."""
    await owned_job(request, caller, job_id, _not_found)
    row = await qc_reports.full_report(request.app.state.pool, caller.tenant_id, job_id)
    if row is None:
        raise Problem(
            404, "qc_report_not_ready", "No quality control report yet", "The job has not been through quality control"
        )
    report = json.loads(row["report"])
    return QcReport(
        job_id=row["job_id"],
        render_id=row["render_id"],
        passed=row["passed"],
        checked_at=row["checked_at"],
        thresholds=report.get("thresholds") or {},
        outputs=report.get("outputs") or [],
    )
