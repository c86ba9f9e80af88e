"""The orchestrator's view of billing: reserve, settle, release over gRPC with deadlines.

Transient failures (billing down, deadline) propagate so the Kafka consumer retries the event;
a refusal (no credit, no rate) becomes a `BillingRefused` that fails the job with a clear code.
"""

from __future__ import annotations

import grpc
from pydantic import SecretStr

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc, spend_pb2, spend_pb2_grpc
from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import grpc as core_grpc


class BillingRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BillingClient:
    def __init__(self, target: str, timeout_seconds: float, operator_token: SecretStr | str | None = None) -> None:
        # The operator token opens billing's SpendService (the console's spend today).
        self._channel = core_grpc.channel(target, operator_token)
        self._stub = billing_pb2_grpc.BillingServiceStub(self._channel)
        self._spend = spend_pb2_grpc.SpendServiceStub(self._channel)
        self._timeout = timeout_seconds

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def reserve(self, tenant_id: str, job_id: str, spec: jobs_pb2.JobSpec) -> int:
        request = billing_pb2.ReserveRequest(
            tenant_id=tenant_id, job_id=job_id, model=spec.model, width=spec.width, height=spec.height,
            seconds=spec.seconds,
        )
        try:
            response = await self._stub.Reserve(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _refusal_or_transient(exc) from exc
        return int(response.amount_micros)

    async def settle(self, tenant_id: str, job_id: str, seconds: float) -> int:
        request = billing_pb2.SettleRequest(tenant_id=tenant_id, job_id=job_id, seconds=seconds)
        try:
            response = await self._stub.Settle(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _refusal_or_transient(exc) from exc
        return int(response.charged_micros)

    async def release(self, tenant_id: str, job_id: str, reason: str) -> int:
        request = billing_pb2.ReleaseRequest(tenant_id=tenant_id, job_id=job_id, reason=reason)
        response = await self._stub.Release(request, timeout=self._timeout)
        return int(response.released_micros)

    async def spend(self, day: str = "") -> spend_pb2.GetSpendResponse:
        """Every tenant's spend for a UTC day (today when empty); raises AioRpcError when billing fails."""
        return await self._spend.GetSpend(spend_pb2.GetSpendRequest(day=day), timeout=self._timeout)


def _refusal_or_transient(exc: grpc.aio.AioRpcError) -> Exception:
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("insufficient_credit"):
        return BillingRefused("insufficient_credit", "the tenant's credit does not cover this job")
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return BillingRefused("unpriceable", f"billing cannot price this job: {details}")
    return exc
