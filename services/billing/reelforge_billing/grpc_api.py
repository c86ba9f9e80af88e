"""gRPC edge of billing: validates requests and maps domain errors to status codes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from pydantic import SecretStr

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc, spend_pb2_grpc
from reelforge_billing import reports, spend
from reelforge_billing.pricing import NoRate, seconds_of
from reelforge_billing.store import (
    Balance,
    InsufficientCredit,
    LedgerStore,
    RefundRefused,
    ReservationClosed,
    UnknownReservation,
)
from reelforge_core import grpc as core_grpc
from reelforge_core.grpc_auth import OperatorTokenInterceptor

MAX_SECONDS = 600.0

Context = grpc.aio.ServicerContext[Any, Any]


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, store: LedgerStore, currency: str, reconcile_grace_seconds: float = 300.0) -> None:
        self._store = store
        self._currency = currency
        self._grace = reconcile_grace_seconds

    async def Reserve(
        self, request: billing_pb2.ReserveRequest, context: Context
    ) -> billing_pb2.ReserveResponse:
        await _require_ids(request.tenant_id, request.job_id, context)
        if not 0 < request.seconds <= MAX_SECONDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"seconds must be in (0, {MAX_SECONDS}]")
        try:
            amount = await self._store.reserve(
                request.tenant_id, request.job_id, request.model, request.width, request.height,
                seconds_of(request.seconds),
            )
        except NoRate as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except InsufficientCredit as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"insufficient_credit: {exc}")
        except UnknownReservation as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return billing_pb2.ReserveResponse(amount_micros=amount, currency=self._currency)

    async def Settle(
        self, request: billing_pb2.SettleRequest, context: Context
    ) -> billing_pb2.SettleResponse:
        await _require_ids(request.tenant_id, request.job_id, context)
        if not 0 <= request.seconds <= MAX_SECONDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"seconds must be in [0, {MAX_SECONDS}]")
        try:
            charged = await self._store.settle(request.tenant_id, request.job_id, seconds_of(request.seconds))
        except UnknownReservation as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ReservationClosed as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return billing_pb2.SettleResponse(charged_micros=charged, currency=self._currency)

    async def Release(
        self, request: billing_pb2.ReleaseRequest, context: Context
    ) -> billing_pb2.ReleaseResponse:
        await _require_ids(request.tenant_id, request.job_id, context)
        released = await self._store.release(request.tenant_id, request.job_id)
        return billing_pb2.ReleaseResponse(released_micros=released)

    async def GetBalance(
        self, request: billing_pb2.GetBalanceRequest, context: Context
    ) -> billing_pb2.GetBalanceResponse:
        if not request.tenant_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id is required")
        return self._balance(await self._store.balance(request.tenant_id))

    def _balance(self, balance: Balance) -> billing_pb2.GetBalanceResponse:
        return balance_message(balance, self._currency)

    async def CheckQuota(
        self, request: billing_pb2.CheckQuotaRequest, context: Context
    ) -> billing_pb2.CheckQuotaResponse:
        await require_tenant(request.tenant_id, context)
        if not 0 < request.seconds <= MAX_SECONDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"seconds must be in (0, {MAX_SECONDS}]")
        try:
            quote = await self._store.check_quota(
                request.tenant_id, request.model, request.width, request.height, seconds_of(request.seconds)
            )
        except NoRate as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return billing_pb2.CheckQuotaResponse(
            allowed=quote.allowed, reason=quote.reason, price_micros=quote.price, free_micros=quote.free,
            paid_micros=quote.paid, balance=self._balance(quote.balance),
        )

    async def Refund(self, request: billing_pb2.RefundRequest, context: Context) -> billing_pb2.RefundResponse:
        await _require_ids(request.tenant_id, request.job_id, context)
        if not request.refund_id or len(request.refund_id) > 200:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refund_id is required (at most 200 chars)")
        try:
            refunded = await self._store.refund(
                request.tenant_id, request.job_id, request.refund_id, request.amount_micros, request.reason
            )
        except UnknownReservation as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except RefundRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return billing_pb2.RefundResponse(refunded_micros=refunded, currency=self._currency)

    async def GetInvoice(self, request: billing_pb2.GetInvoiceRequest, context: Context) -> billing_pb2.Invoice:
        await require_tenant(request.tenant_id, context)
        month = await _month(request.month or reports.current_month(), context)
        return self._invoice(await reports.invoice(self._store.pool, request.tenant_id, month))

    def _invoice(self, invoice: reports.Invoice) -> billing_pb2.Invoice:
        return billing_pb2.Invoice(
            tenant_id=invoice.tenant_id, month=invoice.month, currency=self._currency,
            total_micros=invoice.total, free_micros=invoice.free,
            lines=[
                billing_pb2.InvoiceLine(
                    model=line.model, resolution=line.resolution, jobs=line.jobs, seconds=float(line.seconds),
                    charged_micros=line.charged, free_micros=line.free, refunded_micros=line.refunded,
                    amount_micros=line.amount,
                )
                for line in invoice.lines
            ],
        )

    async def ListInvoices(
        self, request: billing_pb2.ListInvoicesRequest, context: Context
    ) -> billing_pb2.ListInvoicesResponse:
        await require_tenant(request.tenant_id, context)
        months = await reports.invoice_months(self._store.pool, request.tenant_id, min(request.limit or 24, 120))
        return billing_pb2.ListInvoicesResponse(invoices=[
            self._invoice(await reports.invoice(self._store.pool, request.tenant_id, month)) for month in months
        ])

    async def GetUsage(self, request: billing_pb2.GetUsageRequest, context: Context) -> billing_pb2.UsageReport:
        await require_tenant(request.tenant_id, context)
        now = datetime.now(UTC)
        start = await instant(request, "start", context) or reports.month_bounds(reports.current_month())[0]
        end = await instant(request, "end", context) or now
        if end <= start:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "end must be after start")
        try:
            rows = await reports.usage_summary(self._store.pool, request.tenant_id, start, end, list(request.group_by))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        report = billing_pb2.UsageReport(tenant_id=request.tenant_id, currency=self._currency, rows=[
            billing_pb2.UsageRow(model=r.model, resolution=r.resolution, day=r.day, jobs=r.jobs,
                                 seconds=float(r.seconds), charged_micros=r.charged)
            for r in rows
        ])
        report.start.FromDatetime(start)
        report.end.FromDatetime(end)
        return report

    async def ExportUsage(
        self, request: billing_pb2.ExportUsageRequest, context: Context
    ) -> billing_pb2.ExportUsageResponse:
        await require_tenant(request.tenant_id, context)
        month = await _month(request.month, context) if request.month else None
        text, rows = await reports.usage_csv(self._store.pool, request.tenant_id, month)
        return billing_pb2.ExportUsageResponse(csv=text, rows=rows)

    async def GetMarginReport(
        self, request: billing_pb2.MarginReportRequest, context: Context
    ) -> billing_pb2.MarginReport:
        month = await _month(request.month or reports.current_month(), context)
        lines = await reports.margins(self._store.pool, month, request.tenant_id or None)
        return billing_pb2.MarginReport(
            month=month,
            lines=[
                billing_pb2.MarginLine(
                    tenant_id=line.tenant_id, model=line.model, jobs=line.jobs, seconds=float(line.seconds),
                    price_micros=line.price, provider_cost_micros=line.provider_cost, margin_micros=line.margin,
                )
                for line in lines
            ],
        )

    async def ListBudgetAlerts(
        self, request: billing_pb2.ListBudgetAlertsRequest, context: Context
    ) -> billing_pb2.ListBudgetAlertsResponse:
        limit = min(request.limit or 100, 1000)
        alerts = await reports.pending_alerts(self._store.pool, request.tenant_id or None, limit)
        return billing_pb2.ListBudgetAlertsResponse(
            alerts=[
                billing_pb2.BudgetAlert(
                    id=a.id, tenant_id=a.tenant_id, month=a.month, threshold_pct=a.threshold_pct,
                    spent_micros=a.spent, budget_micros=a.budget,
                )
                for a in alerts
            ]
        )

    async def AckBudgetAlerts(
        self, request: billing_pb2.AckBudgetAlertsRequest, context: Context
    ) -> billing_pb2.AckBudgetAlertsResponse:
        if len(request.ids) > 1000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "at most 1000 ids at a time")
        acknowledged = await reports.ack_alerts(self._store.pool, list(request.ids))
        return billing_pb2.AckBudgetAlertsResponse(acknowledged=acknowledged)

    async def Reconcile(self, request: billing_pb2.ReconcileRequest, context: Context) -> billing_pb2.ReconcileReport:
        month = await _month(request.month or reports.current_month(), context)
        report = await reports.reconcile(self._store.pool, month, self._grace)
        return billing_pb2.ReconcileReport(
            month=report.month, usage_records=report.usage_records, settlements=report.settlements,
            differences=[
                billing_pb2.ReconcileDifference(
                    job_id=d.job_id, tenant_id=d.tenant_id, kind=d.kind, recorded_micros=d.recorded,
                    expected_micros=d.expected,
                )
                for d in report.differences
            ],
        )


def balance_message(balance: Balance, currency: str) -> billing_pb2.GetBalanceResponse:
    return billing_pb2.GetBalanceResponse(
        available_micros=balance.available, reserved_micros=balance.reserved,
        spent_micros=balance.spent, currency=currency, free_micros=balance.free_micros,
        free_seconds=float(balance.free_seconds), credit_limit_micros=balance.credit_limit, mode=balance.mode,
    )


async def start_server(
    store: LedgerStore, currency: str, host: str, port: int, reconcile_grace_seconds: float = 300.0,
    operator_token: str | SecretStr | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Starts the billing gRPC server (with health and reflection); returns it and its bound port.

    Every service answers only calls carrying `operator_token` (with none, they refuse every call):
    BillingAdminService and SpendService are the operators' (prices, credit, grants, spend across tenants),
    BillingService the platform services' own (reserve/settle, and the per-tenant reads the gateway scopes to
    its caller), which may move money for any tenant, so the orchestrator and the gateway present it too."""
    from reelforge_billing.admin_api import BillingAdminServicer  # it builds on this module's helpers

    services = billing_pb2.DESCRIPTOR.services_by_name
    names = [services["BillingService"].full_name, services["BillingAdminService"].full_name, spend.SERVICE_NAME]
    server, _ = core_grpc.create_server(
        names, OperatorTokenInterceptor(operator_token, names, "REELFORGE_BILLING_OPERATOR_TOKEN"),
    )
    billing_pb2_grpc.add_BillingServiceServicer_to_server(
        BillingServicer(store, currency, reconcile_grace_seconds), server
    )
    billing_pb2_grpc.add_BillingAdminServiceServicer_to_server(BillingAdminServicer(store, currency), server)
    spend_pb2_grpc.add_SpendServiceServicer_to_server(spend.SpendServicer(store.pool, currency), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def require_tenant(tenant_id: str, context: Context) -> None:
    if not tenant_id or len(tenant_id) > 100:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id is required (at most 100 chars)")


async def instant(request: Any, field: str, context: Context) -> datetime | None:
    """A Timestamp field as an aware datetime; None when unset; INVALID_ARGUMENT when out of range."""
    if not request.HasField(field):
        return None
    try:
        value: datetime = getattr(request, field).ToDatetime(UTC)
    except (ValueError, OverflowError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is not a valid time")
    return value


async def _month(month: str, context: Context) -> str:
    try:
        reports.month_bounds(month)
    except ValueError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    return month


async def _require_ids(tenant_id: str, job_id: str, context: Context) -> None:
    if not tenant_id or not job_id or len(tenant_id) > 100 or len(job_id) > 100:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id and job_id are required (at most 100 chars)")
