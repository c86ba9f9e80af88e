"""The partner gRPC JobsService: the native REST job API over gRPC, on the same code paths.

Auth, scopes and rate limits come from the REST gatekeeper, creation from `jobs.accept_job` (same
validation model, moderation, tenant job limits and idempotency keys: a key is shared with REST
POST /v1/jobs), reads from the same tenant-scoped store. Errors are the REST problems mapped to status
codes, with the problem's `code` in trailing metadata and in google.rpc error details.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from pydantic import ValidationError
from starlette.datastructures import State

from reelforge.jobs.v1 import jobs_pb2, jobs_service_pb2, jobs_service_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_core import transient
from reelforge_core.service import ServiceRuntime
from reelforge_gateway import follow, store, validation
from reelforge_gateway.api import idempotency, jobs
from reelforge_gateway.api.auth import Caller, Gatekeeper, require_scope
from reelforge_gateway.api.problems import Problem

log = logging.getLogger(__name__)

SERVICE_NAME = jobs_service_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name
ERROR_CODE_KEY = "reelforge-error-code"
MAX_MESSAGE_CHARS = 500  # the status travels in a trailer; never echo a huge value back
Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")

_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
           403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
           409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.INVALID_ARGUMENT,
           422: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
           503: grpc.StatusCode.UNAVAILABLE}


async def abort_with(context: Context, problem: Problem) -> None:
    code = _STATUS.get(problem.status, grpc.StatusCode.INTERNAL)
    message = f"{problem.title}: {problem.detail}" if problem.detail else problem.title
    message = message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
    details = [error_details_pb2.ErrorInfo(reason=problem.code, domain="reelforge")]
    errors = problem.extra.get("errors") or []
    param = problem.extra.get("param")
    if errors or param:
        violations = [error_details_pb2.BadRequest.FieldViolation(field=str(e.get("field") or ""),
                                                                  description=str(e.get("message", "")))
                      for e in errors] or [error_details_pb2.BadRequest.FieldViolation(field=str(param),
                                                                                        description=message)]
        details.append(error_details_pb2.BadRequest(field_violations=violations))
    headers = {name.lower(): value for name, value in problem.headers.items() if name.lower() != "www-authenticate"}
    if "retry-after" in headers:
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(headers["retry-after"]))))
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    trailers = [(ERROR_CODE_KEY, problem.code), ("grpc-status-details-bin", status.SerializeToString()),
                *headers.items()]
    await context.abort(code, message, trailing_metadata=tuple(trailers))


def _unexpected(exc: Exception) -> Problem:
    if isinstance(exc, asyncpg.DataError):  # only a request's values can make one (e.g. a date out of range)
        return Problem(422, "invalid_request", "The request has an invalid value", f"SQLSTATE {exc.sqlstate}")
    if transient.is_transient(exc):
        log.warning("dependency unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
        return Problem(503, "service_unavailable", "Temporarily unavailable; retry shortly",
                       headers={"Retry-After": "1"})
    log.exception("unhandled error")
    return Problem(500, "internal_error", "Something went wrong on our side")


def _unary(method: Callable[[Any, Any, Context], Awaitable[R]]) -> Callable[[Any, Any, Context], Awaitable[R]]:
    @functools.wraps(method)
    async def handle(self: Any, request: Any, context: Context) -> R:
        try:
            return await method(self, request, context)
        except Problem as problem:
            await abort_with(context, problem)
        except ValidationError as exc:
            await abort_with(context, invalid(exc))
        except Exception as exc:  # the edge: nothing escapes as a bare INTERNAL with a trace
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_with(context, _unexpected(exc))
        raise AssertionError("abort returned")  # pragma: no cover

    return handle


def invalid(exc: ValidationError) -> Problem:
    errors = [{"field": ".".join(str(part) for part in error.get("loc", ())) or None,
               "message": error.get("msg", "invalid"), "type": error.get("type")} for error in exc.errors()]
    detail = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors)
    return Problem(422, "invalid_request", "The request has invalid fields", detail, errors=errors)


def _field_problem(field: str, message: str, code: str = "invalid_request") -> Problem:
    return Problem(422, code, "The request has invalid fields", f"{field}: {message}",
                   errors=[{"field": field, "message": message, "type": "value_error"}])


_STATE_VALUES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in jobs_pb2.JobState.items()}
_STATE_NAMES = {value: name for name, value in _STATE_VALUES.items()}


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _moment(stamp: Timestamp, field: str) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise _field_problem(field, "not a valid time") from None


def transition_message(index: int, entry: dict[str, Any]) -> jobs_service_pb2.JobTransition:
    return jobs_service_pb2.JobTransition(
        state=_STATE_VALUES.get(entry["status"], jobs_pb2.JOB_STATE_UNSPECIFIED),
        progress=int(entry.get("progress") or 0), at=_timestamp(datetime.fromisoformat(entry["at"])),
        error_code=entry.get("error_code") or "", index=index)


def job_message(view: jobs.JobView) -> jobs_service_pb2.Job:
    """The REST job view as a message (the same fields, so both edges answer alike)."""
    message = jobs_service_pb2.Job(
        id=view.id, state=_STATE_VALUES.get(view.status, jobs_pb2.JOB_STATE_UNSPECIFIED), progress=view.progress,
        model=view.model, prompt=view.prompt, seconds=view.seconds, size=view.size, voice=view.voice, seed=view.seed,
        created_at=_timestamp(view.created_at), updated_at=_timestamp(view.updated_at),
        timeline=[transition_message(i, entry.model_dump(mode="json")) for i, entry in enumerate(view.timeline)],
        content_url=view.content_url or "", metadata=view.metadata, requested_model=view.requested_model or "",
        batch_id=view.batch_id or "",
    )
    if view.narration is not None:
        message.narration = view.narration
    if view.error is not None:
        message.error.CopyFrom(jobs_service_pb2.JobError(code=view.error.code, message=view.error.message or ""))
    if view.output_seconds is not None:
        message.output_seconds = view.output_seconds
    if view.cost is not None:
        message.cost.CopyFrom(jobs_service_pb2.Cost(amount_micros=view.cost.amount_micros, currency=view.cost.currency))
    if view.cancel_requested_at is not None:
        message.cancel_requested_at.CopyFrom(_timestamp(view.cancel_requested_at))
    if view.completed_at is not None:
        message.completed_at.CopyFrom(_timestamp(view.completed_at))
    return message


class JobsServicer(jobs_service_pb2_grpc.JobsServiceServicer):
    def __init__(self, state: State) -> None:
        self._state = state
        self._gatekeeper: Gatekeeper = state.gatekeeper

    async def _caller(self, context: Context, scope: str) -> Caller:
        authorization = next((str(value) for key, value in context.invocation_metadata() or ()
                              if key == "authorization"), "")
        caller = await self._gatekeeper.caller(authorization)
        require_scope(caller, scope)
        await self._gatekeeper.admit(caller)
        return caller

    @_unary
    async def CreateJob(self, request: jobs_service_pb2.CreateJobRequest,
                        context: Context) -> jobs_service_pb2.CreateJobResponse:
        caller = await self._caller(context, "jobs:write")
        fields: dict[str, Any] = {"prompt": request.prompt, "seconds": request.seconds,
                                  "metadata": dict(request.metadata)}
        for name in ("size", "model", "voice"):
            if getattr(request, name):
                fields[name] = getattr(request, name)
        if request.HasField("narration"):
            fields["narration"] = request.narration
        if request.HasField("seed"):
            fields["seed"] = request.seed
        body = jobs.CreateJob.model_validate(fields)
        key = (idempotency.for_request(request.idempotency_key, "POST", "/v1/jobs", jobs.fingerprint(body),
                                       param="idempotency_key") if request.idempotency_key else None)
        submitted = await jobs.accept_job(self._state, caller, body, key)
        return jobs_service_pb2.CreateJobResponse(job=job_message(jobs.JobView.model_validate(submitted.body)),
                                                  replayed=submitted.replayed)

    @_unary
    async def GetJob(self, request: jobs_service_pb2.GetJobRequest, context: Context) -> jobs_service_pb2.Job:
        caller = await self._caller(context, "jobs:read")
        return job_message(jobs.JobView.from_row(await self._owned(caller, request.job_id)))

    @_unary
    async def CancelJob(self, request: jobs_service_pb2.CancelJobRequest, context: Context) -> jobs_service_pb2.Job:
        caller = await self._caller(context, "jobs:write")
        return job_message(jobs.JobView.from_row(await jobs.cancel(self._state.pool, caller, request.job_id)))

    @_unary
    async def ListJobs(self, request: jobs_service_pb2.ListJobsRequest,
                       context: Context) -> jobs_service_pb2.ListJobsResponse:
        caller = await self._caller(context, "jobs:read")
        limit = request.limit or 20
        if limit > 100:
            raise _field_problem("limit", "must be between 1 and 100")
        statuses = []
        for value in request.statuses:
            if value not in _STATE_NAMES or value == jobs_pb2.JOB_STATE_UNSPECIFIED:
                raise _field_problem("statuses", f"unknown state {value}")
            statuses.append(_STATE_NAMES[value])
        metadata = dict(request.metadata)
        try:
            validation.check_metadata(metadata)
        except ValueError as exc:
            raise _field_problem("metadata", str(exc)) from None
        if request.batch_id and not (len(request.batch_id) <= 64
                                     and request.batch_id.replace("_", "").replace("-", "").isalnum()
                                     and request.batch_id.isascii()):
            raise _field_problem("batch_id", "expected at most 64 letters, digits, '_' or '-'")
        if len(request.cursor) > 200:
            raise _field_problem("cursor", "too long", "invalid_cursor")
        after = _moment(request.created_after, "created_after") if request.HasField("created_after") else None
        before = _moment(request.created_before, "created_before") if request.HasField("created_before") else None
        where = store.JobFilter(status=statuses or None, created_after=after, created_before=before,
                                metadata=metadata or None, batch_id=request.batch_id or None)
        page = await jobs.page_of_jobs(self._state.pool, caller.tenant_id, limit, request.cursor or None, where)
        return jobs_service_pb2.ListJobsResponse(jobs=[job_message(view) for view in page.data], has_more=page.has_more,
                                                 next_cursor=page.next_cursor or "")

    async def Watch(self, request: jobs_service_pb2.WatchRequest,
                    context: Context) -> AsyncIterator[jobs_service_pb2.WatchResponse]:
        try:
            caller = await self._caller(context, "jobs:read")
            first = await self._owned(caller, request.job_id)
            yield jobs_service_pb2.WatchResponse(job=job_message(jobs.JobView.from_row(first)))
            fallback = self._state.settings.stream_fallback_seconds
            async for index, entry, row in follow.transitions(self._state.pool, self._state.notifications, first,
                                                              fallback):
                response = jobs_service_pb2.WatchResponse(transition=transition_message(index, entry))
                if entry["status"] in store.TERMINAL_STATES:
                    response.job.CopyFrom(job_message(jobs.JobView.from_row(row)))
                yield response
        except Problem as problem:
            await abort_with(context, problem)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, _unexpected(exc))

    async def _owned(self, caller: Caller, job_id: str) -> Any:
        row = await store.get_job(self._state.pool, caller.tenant_id, job_id) if len(job_id) <= 64 else None
        if row is None:
            raise jobs._job_not_found(job_id)
        return row


async def serve(runtime: ServiceRuntime, state: State, host: str, port: int) -> int:
    """Starts the JobsService (with health and reflection) and stops it with the service; returns the port."""
    server, _ = core_grpc.create_server([SERVICE_NAME])
    jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(JobsServicer(state), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    runtime.on_close(lambda: server.stop(grace=5))
    log.info("partner gRPC listening", extra={"grpc_port": bound})
    return bound
