"""gRPC edge of billing: validates requests and maps domain errors to status codes."""

from __future__ import annotations

from typing import Any

import grpc

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_billing.pricing import NoRate, seconds_of
from reelforge_billing.store import InsufficientCredit, LedgerStore, ReservationClosed, UnknownReservation

MAX_SECONDS = 600.0

Context = grpc.aio.ServicerContext[Any, Any]


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, store: LedgerStore, currency: str) -> None:
        self._store = store
        self._currency = currency

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
        balance = await self._store.balance(request.tenant_id)
        return billing_pb2.GetBalanceResponse(
            available_micros=balance.available, reserved_micros=balance.reserved,
            spent_micros=balance.spent, currency=self._currency,
        )


async def _require_ids(tenant_id: str, job_id: str, context: Context) -> None:
    if not tenant_id or not job_id or len(tenant_id) > 100 or len(job_id) > 100:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id and job_id are required (at most 100 chars)")
