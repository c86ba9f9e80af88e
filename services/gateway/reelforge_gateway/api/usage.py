"""/v1/usage, /v1/usage.csv, /v1/invoices and /v1/balance: the caller's own metering, invoices and credit,
read from the billing service. Money is integer micros of `currency` (1 USD = 1,000,000) plus a decimal
string for display."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, Field

from reelforge.billing.v1 import billing_pb2
from reelforge_gateway.api.auth import Caller, authenticate, require_scope
from reelforge_gateway.api.problems import Problem
from reelforge_gateway.billing_client import BillingClient, BillingRefused, BillingUnavailable

router = APIRouter(tags=["billing"])
AuthCaller = Annotated[Caller, Depends(authenticate)]
_PROBLEM = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": text}
    for status, text in [(401, "Missing or invalid API key"), (403, "Scope"), (422, "Invalid request"),
                         (429, "Rate limited"), (503, "Billing is unavailable; retry later")]
}
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
GROUPINGS = ("model", "resolution", "day")
MAX_PERIOD_DAYS = 366


def _money(micros: int) -> str:
    return f"{Decimal(micros) / Decimal(1_000_000):.6f}"


class UsageLine(BaseModel):
    model: str | None = Field(description="Set when grouped by model")
    resolution: str | None = Field(description="WIDTHxHEIGHT, set when grouped by resolution")
    day: str | None = Field(description="YYYY-MM-DD (UTC), set when grouped by day")
    jobs: int
    seconds: float
    amount_micros: int
    amount: str


class Usage(BaseModel):
    object: Literal["usage"] = "usage"
    start: datetime
    end: datetime
    group_by: list[str]
    currency: str
    data: list[UsageLine]
    total_micros: int
    total: str


class InvoiceLine(BaseModel):
    model: str
    resolution: str
    jobs: int
    seconds: float
    charged_micros: int = Field(description="Price of the seconds rendered, free and paid")
    free_micros: int = Field(description="Paid for by free grants")
    refunded_micros: int
    amount_micros: int = Field(description="What the tenant pays: the paid part net of refunds")
    amount: str


class Invoice(BaseModel):
    id: str = Field(description="The month, YYYY-MM (UTC)")
    object: Literal["invoice"] = "invoice"
    period_start: datetime
    period_end: datetime
    status: Literal["open", "closed"] = Field(description="`open` while the month is running")
    currency: str
    lines: list[InvoiceLine]
    total_micros: int
    total: str
    free_micros: int


class InvoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Invoice]


class Grant(BaseModel):
    id: str
    unit: Literal["seconds", "micros"]
    amount: float
    remaining: float
    expires_at: datetime | None
    created_at: datetime | None


class Balance(BaseModel):
    object: Literal["balance"] = "balance"
    currency: str
    mode: Literal["prepaid", "postpaid"]
    available_micros: int = Field(description="Credit left; negative when a postpaid tenant owes")
    available: str
    reserved_micros: int = Field(description="Held for running jobs")
    credit_limit_micros: int = Field(description="How far below zero a postpaid tenant may go")
    free_micros: int = Field(description="Unused money grants")
    free_seconds: float = Field(description="Unused seconds grants")
    grants: list[Grant]


def _client(request: Request) -> BillingClient:
    client: BillingClient | None = getattr(request.app.state, "billing", None)
    if client is None:
        raise Problem(503, "billing_unavailable", "Billing is not available", "The gateway has no billing target")
    return client


async def _ask(call: Any) -> Any:
    try:
        return await call
    except BillingRefused as exc:
        raise Problem(422, "invalid_request", "The request has invalid fields", str(exc)) from None
    except BillingUnavailable:
        raise Problem(503, "billing_unavailable", "Billing is not available; retry later",
                      headers={"Retry-After": "5"}) from None


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    year, mon = int(month[:4]), int(month[5:])
    start = datetime(year, mon, 1, tzinfo=UTC)
    return start, datetime(year + (mon == 12), 1 if mon == 12 else mon + 1, 1, tzinfo=UTC)


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "invalid_request", "The request has invalid fields", message,
                   errors=[{"field": field, "message": message, "type": "value_error"}])


def _period(period: str | None, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    if period is not None and (start is not None or end is not None):
        raise _invalid("period", "give either period or start/end")
    if period is not None:
        if not _MONTH.match(period):
            raise _invalid("period", "period must be YYYY-MM")
        return _month_bounds(period)
    now = datetime.now(UTC)
    begin = _instant(start, "start") if start is not None else _month_bounds(now.strftime("%Y-%m"))[0]
    finish = _instant(end, "end") if end is not None else now
    if finish <= begin:
        raise _invalid("end", "end must be after start")
    if (finish - begin).days > MAX_PERIOD_DAYS:
        raise _invalid("end", f"a period spans at most {MAX_PERIOD_DAYS} days")
    return begin, finish


def _instant(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(field, f"{field} must be an ISO 8601 date or time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _groupings(group_by: list[str]) -> list[str]:
    wanted = [g.strip() for item in group_by for g in item.split(",") if g.strip()]
    for grouping in wanted:
        if grouping not in GROUPINGS:
            raise _invalid("group_by", f"group_by must be among {', '.join(GROUPINGS)}")
    return sorted(set(wanted), key=GROUPINGS.index)


@router.get("/v1/usage", response_model=Usage, responses=_ERRORS)
async def get_usage(
    request: Request, caller: AuthCaller,
    period: Annotated[str | None, Query(description="A calendar month, YYYY-MM (UTC)", max_length=7)] = None,
    start: Annotated[str | None, Query(description="Inclusive, ISO 8601 date or date-time, UTC unless an offset"
                                       " is given (default: start of this month)", max_length=40)] = None,
    end: Annotated[str | None, Query(description="Exclusive, ISO 8601 date or date-time (default: now)",
                                     max_length=40)] = None,
    group_by: Annotated[list[str] | None, Query(
        description="Any of model, resolution, day; repeat or comma-separate. None sums the period")] = None,
) -> Usage:
    """Metered seconds and charges of finished jobs over a period, summed by the chosen groupings."""
    require_scope(caller, "jobs:read")
    begin, finish = _period(period, start, end)
    groupings = _groupings(group_by or [])
    report: billing_pb2.UsageReport = await _ask(_client(request).usage(caller.tenant_id, begin, finish, groupings))
    lines = [
        UsageLine(model=row.model if "model" in groupings else None,
                  resolution=row.resolution if "resolution" in groupings else None,
                  day=row.day if "day" in groupings else None, jobs=row.jobs, seconds=row.seconds,
                  amount_micros=row.charged_micros, amount=_money(row.charged_micros))
        for row in report.rows
    ]
    total = sum(line.amount_micros for line in lines)
    return Usage(start=begin, end=finish, group_by=groupings, currency=report.currency, data=lines,
                 total_micros=total, total=_money(total))


@router.get("/v1/usage.csv", response_class=Response, responses={
    **_ERRORS, 200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                     "description": "One row per metered job"}})
async def export_usage(
    request: Request, caller: AuthCaller,
    period: Annotated[str | None, Query(description="A calendar month, YYYY-MM (UTC); default: every month",
                                        max_length=7)] = None,
) -> Response:
    """The caller's metered usage as CSV: occurred_at, job_id, model, resolution, seconds, charged."""
    require_scope(caller, "jobs:read")
    if period is not None and not _MONTH.match(period):
        raise _invalid("period", "period must be YYYY-MM")
    export: billing_pb2.ExportUsageResponse = await _ask(_client(request).usage_csv(caller.tenant_id, period or ""))
    name = f"usage-{period or 'all'}.csv"
    return Response(export.csv, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"',
                             "x-row-count": str(export.rows)})


def _invoice(invoice: billing_pb2.Invoice) -> Invoice:
    begin, finish = _month_bounds(invoice.month)
    return Invoice(
        id=invoice.month, period_start=begin, period_end=finish,
        status="open" if datetime.now(UTC) < finish else "closed", currency=invoice.currency,
        lines=[InvoiceLine(model=line.model, resolution=line.resolution, jobs=line.jobs, seconds=line.seconds,
                           charged_micros=line.charged_micros, free_micros=line.free_micros,
                           refunded_micros=line.refunded_micros, amount_micros=line.amount_micros,
                           amount=_money(line.amount_micros))
               for line in invoice.lines],
        total_micros=invoice.total_micros, total=_money(invoice.total_micros), free_micros=invoice.free_micros,
    )


@router.get("/v1/invoices", response_model=InvoiceList, responses=_ERRORS)
async def list_invoices(
    request: Request, caller: AuthCaller, limit: Annotated[int, Query(ge=1, le=120)] = 24,
) -> InvoiceList:
    """Monthly invoices with charges or refunds, newest first, with line items by model and resolution."""
    require_scope(caller, "jobs:read")
    invoices = await _ask(_client(request).invoices(caller.tenant_id, limit))
    return InvoiceList(data=[_invoice(invoice) for invoice in invoices])


@router.get("/v1/invoices/{invoice_id}", response_model=Invoice, responses={
    **_ERRORS, 404: {**_PROBLEM, "description": "No such invoice"}})
async def get_invoice(invoice_id: str, request: Request, caller: AuthCaller) -> Invoice:
    """One month's invoice (`id` is YYYY-MM); this month's is `open` and still growing."""
    require_scope(caller, "jobs:read")
    if not _MONTH.match(invoice_id) or invoice_id > datetime.now(UTC).strftime("%Y-%m"):
        raise Problem(404, "invoice_not_found", "No such invoice", "An invoice id is a month (YYYY-MM) up to now")
    return _invoice(await _ask(_client(request).invoice(caller.tenant_id, invoice_id)))


def _time(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(UTC) if present else None


@router.get("/v1/balance", response_model=Balance, responses=_ERRORS)
async def get_balance(request: Request, caller: AuthCaller) -> Balance:
    """Credit, holds, credit limit and the free grants still usable (used before credit)."""
    require_scope(caller, "jobs:read")
    balance, grants = await _ask(_client(request).balance(caller.tenant_id))
    return Balance(
        currency=balance.currency, mode="postpaid" if balance.mode == "postpaid" else "prepaid",
        available_micros=balance.available_micros, available=_money(balance.available_micros),
        reserved_micros=balance.reserved_micros, credit_limit_micros=balance.credit_limit_micros,
        free_micros=balance.free_micros, free_seconds=balance.free_seconds,
        grants=[Grant(id=f"grant_{g.id}", unit="seconds" if g.unit == "seconds" else "micros", amount=g.amount,
                      remaining=g.remaining, expires_at=_time(g.expires_at, g.HasField("expires_at")),
                      created_at=_time(g.created_at, g.HasField("created_at")))
                for g in grants],
    )
