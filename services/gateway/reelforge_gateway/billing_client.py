"""The gateway's client of the billing service (gRPC), for the partner-facing usage, invoice and balance reads.

Billing owns the numbers; the gateway only asks for the authenticated caller's tenant, so tenant isolation
holds by construction (a tenant id never comes from the request).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import SecretStr

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_core import grpc as core_grpc

T = TypeVar("T")


class BillingUnavailable(Exception):
    """Billing could not answer (not configured, down or too slow)."""


class BillingRefused(Exception):
    """Billing rejected the question as invalid (INVALID_ARGUMENT)."""


def _stamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


class BillingClient:
    def __init__(self, target: str, timeout_seconds: float = 5.0, operator_token: SecretStr | None = None) -> None:
        # The operator token opens BillingAdminService (a tenant's free grants, for /v1/balance).
        self._channel = core_grpc.channel(target, operator_token)
        self._billing = billing_pb2_grpc.BillingServiceStub(self._channel)
        self._admin = billing_pb2_grpc.BillingAdminServiceStub(self._channel)
        self._timeout = timeout_seconds

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def usage(self, tenant_id: str, start: datetime, end: datetime, group_by: list[str]
                    ) -> billing_pb2.UsageReport:
        request = billing_pb2.GetUsageRequest(tenant_id=tenant_id, start=_stamp(start), end=_stamp(end),
                                              group_by=group_by)
        return await self._call(self._billing.GetUsage(request, timeout=self._timeout))

    async def usage_csv(self, tenant_id: str, month: str) -> billing_pb2.ExportUsageResponse:
        request = billing_pb2.ExportUsageRequest(tenant_id=tenant_id, month=month)
        return await self._call(self._billing.ExportUsage(request, timeout=self._timeout))

    async def invoices(self, tenant_id: str, limit: int) -> list[billing_pb2.Invoice]:
        request = billing_pb2.ListInvoicesRequest(tenant_id=tenant_id, limit=limit)
        return list((await self._call(self._billing.ListInvoices(request, timeout=self._timeout))).invoices)

    async def invoice(self, tenant_id: str, month: str) -> billing_pb2.Invoice:
        request = billing_pb2.GetInvoiceRequest(tenant_id=tenant_id, month=month)
        return await self._call(self._billing.GetInvoice(request, timeout=self._timeout))

    async def balance(self, tenant_id: str) -> tuple[billing_pb2.GetBalanceResponse, list[billing_pb2.FreeGrant]]:
        balance = await self._call(self._billing.GetBalance(billing_pb2.GetBalanceRequest(tenant_id=tenant_id),
                                                            timeout=self._timeout))
        grants = await self._call(self._admin.ListFreeGrants(
            billing_pb2.ListFreeGrantsRequest(tenant_id=tenant_id), timeout=self._timeout))
        return balance, list(grants.grants)

    @staticmethod
    async def _call(call: grpc.aio.UnaryUnaryCall[Any, T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise BillingRefused(exc.details() or "invalid request") from None
            raise BillingUnavailable(f"{exc.code().name}: {exc.details()}") from None
