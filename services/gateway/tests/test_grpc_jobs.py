"""The partner gRPC JobsService on a real gateway over real PostgreSQL (no Kafka: the status consumer's
code path is driven by `gateway.advance`, as the orchestrator's events would)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from reelforge.jobs.v1 import jobs_pb2, jobs_service_pb2, jobs_service_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_gateway import grpc_api
from reelforge_gateway.api.app import create_app
from services.gateway.tests.conftest import make_settings
from services.gateway.tests.harness import Gateway

Stub = jobs_service_pb2_grpc.JobsServiceStub
Q = jobs_pb2.JOB_STATE_QUEUED


@pytest.fixture
def grpc_app(gateway: Gateway) -> Iterator[FastAPI]:
    """A second instance's state over the same database as the REST gateway (as with replicas). Watch's
    fallback re-read is a minute away (make_settings), so a stream that sees a transition at once was woken
    by its NOTIFY."""
    app = create_app(gateway.pool, gateway.content, make_settings())
    try:
        yield app
    finally:
        gateway.run(app.state.notifications.close())


@pytest.fixture
def grpc_target(gateway: Gateway, grpc_app: FastAPI) -> Iterator[str]:
    """The JobsService of `grpc_app`."""

    async def start() -> tuple[grpc.aio.Server, int]:
        server, _ = core_grpc.create_server([grpc_api.SERVICE_NAME])
        jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(grpc_api.JobsServicer(grpc_app.state), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = gateway.run(start())
    try:
        yield f"127.0.0.1:{port}"
    finally:
        gateway.run(server.stop(grace=1))


@pytest.fixture
def stub(grpc_target: str) -> Iterator[Stub]:
    with grpc.insecure_channel(grpc_target) as channel:
        yield Stub(channel)


def auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def error_code(exc: grpc.RpcError) -> str:
    trailers = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    return str(trailers.get(grpc_api.ERROR_CODE_KEY, ""))


def status_details(exc: grpc.RpcError) -> list[Any]:
    trailers = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    found = []
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)
    return found


def fails(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def create(stub: Stub, key: str, **fields: Any) -> jobs_service_pb2.Job:
    request = jobs_service_pb2.CreateJobRequest(prompt="A water purifier", seconds=4, **fields)
    job: jobs_service_pb2.Job = stub.CreateJob(request, metadata=auth(key)).job
    return job


def test_create_get_list_cancel_share_the_rest_jobs(gateway: Gateway, stub: Stub) -> None:
    job = create(stub, gateway.api_key, metadata={"customer": "c-42"}, narration="Pure water.", seed=7)
    assert job.state == Q and job.id.startswith("job_") and job.metadata["customer"] == "c-42"
    assert job.narration == "Pure water." and job.seed == 7 and job.size == "1280x720" and job.model == "animatic"
    rest = httpx.get(f"{gateway.url}/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {gateway.api_key}"}).json()
    assert rest["metadata"] == {"customer": "c-42"} and rest["prompt"] == job.prompt

    got = stub.GetJob(jobs_service_pb2.GetJobRequest(job_id=job.id), metadata=auth(gateway.api_key))
    assert got.id == job.id and dict(got.metadata) == {"customer": "c-42"} and got.timeline[0].state == Q

    other = create(stub, gateway.api_key, metadata={"customer": "c-7"})
    listed = stub.ListJobs(jobs_service_pb2.ListJobsRequest(metadata={"customer": "c-42"}),
                           metadata=auth(gateway.api_key))
    assert [j.id for j in listed.jobs] == [job.id] and not listed.has_more
    first = stub.ListJobs(jobs_service_pb2.ListJobsRequest(limit=1), metadata=auth(gateway.api_key))
    assert [j.id for j in first.jobs] == [other.id] and first.has_more and first.next_cursor
    second = stub.ListJobs(jobs_service_pb2.ListJobsRequest(limit=1, cursor=first.next_cursor),
                           metadata=auth(gateway.api_key))
    assert [j.id for j in second.jobs] == [job.id]
    gateway.advance(other.id, "rendering", 20)
    rendering = stub.ListJobs(jobs_service_pb2.ListJobsRequest(statuses=[jobs_pb2.JOB_STATE_RENDERING]),
                              metadata=auth(gateway.api_key))
    assert [j.id for j in rendering.jobs] == [other.id]

    cancelled = stub.CancelJob(jobs_service_pb2.CancelJobRequest(job_id=job.id), metadata=auth(gateway.api_key))
    assert cancelled.HasField("cancel_requested_at") and cancelled.metadata["customer"] == "c-42"
    gateway.advance(job.id, "cancelled")
    again = fails(stub.CancelJob, jobs_service_pb2.CancelJobRequest(job_id=job.id), metadata=auth(gateway.api_key))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION and error_code(again) == "job_not_cancellable"


def test_fifty_concurrent_duplicates_make_one_job(gateway: Gateway, grpc_target: str) -> None:
    request = jobs_service_pb2.CreateJobRequest(prompt="A water purifier", seconds=4, metadata={"customer": "c-1"},
                                                idempotency_key="order-77")

    async def burst() -> list[jobs_service_pb2.CreateJobResponse]:
        async with grpc.aio.insecure_channel(grpc_target) as channel:
            stub = Stub(channel)
            return list(await asyncio.gather(*[stub.CreateJob(request, metadata=auth(gateway.api_key))
                                               for _ in range(50)]))

    answers = asyncio.run(burst())
    assert len({answer.job.id for answer in answers}) == 1
    assert sum(answer.replayed for answer in answers) == 49
    assert gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs")) == 1
    assert gateway.run(gateway.pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'jobs.v1.submitted'")) == 1

    # The key is the REST Idempotency-Key of POST /v1/jobs: the same request there is the same job.
    rest = httpx.post(f"{gateway.url}/v1/jobs", json={"prompt": "A water purifier", "seconds": 4,
                                                      "metadata": {"customer": "c-1"}},
                      headers={"Authorization": f"Bearer {gateway.api_key}", "Idempotency-Key": "order-77"})
    assert rest.status_code == 202 and rest.json()["id"] == answers[0].job.id
    assert rest.headers["idempotent-replayed"] == "true"

    with grpc.insecure_channel(grpc_target) as channel:
        changed = jobs_service_pb2.CreateJobRequest(prompt="A water purifier", seconds=8, idempotency_key="order-77")
        exc = fails(Stub(channel).CreateJob, changed, metadata=auth(gateway.api_key))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(exc) == "idempotency_key_reused"


def test_bad_input_is_invalid_argument_with_a_code(gateway: Gateway, stub: Stub) -> None:
    cases: list[tuple[Any, Any, str, str]] = [
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x", seconds=0), "invalid_request", "seconds"),
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x", seconds=4, size="1x1"), "invalid_request",
         "size"),
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="  ", seconds=4), "invalid_request", "prompt"),
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x\x00y", seconds=4), "invalid_request", "prompt"),
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x", seconds=4, idempotency_key="a\nb"),
         "invalid_idempotency_key", "idempotency_key"),
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x", seconds=4, seed=2**60), "invalid_request",
         "seed"),
        (stub.ListJobs, jobs_service_pb2.ListJobsRequest(limit=500), "invalid_request", "limit"),
        (stub.ListJobs, jobs_service_pb2.ListJobsRequest(cursor="not-a-cursor"), "invalid_cursor", ""),
        (stub.ListJobs, jobs_service_pb2.ListJobsRequest(statuses=[0]), "invalid_request", "statuses"),
        (stub.ListJobs, jobs_service_pb2.ListJobsRequest(batch_id="a b"), "invalid_request", "batch_id"),
        (stub.ListJobs, jobs_service_pb2.ListJobsRequest(created_after=Timestamp(seconds=2**62)), "invalid_request",
         "created_after"),
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x" * 70_000, seconds=float("nan")),
         "invalid_request", "seconds"),
        (stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x", seconds=4, metadata={"\x00": "v"}),
         "invalid_request", "metadata"),
    ]
    for call, request, code, field in cases:
        exc = fails(call, request, metadata=auth(gateway.api_key))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, exc)
        assert error_code(exc) == code, (request, exc.details())
        details = status_details(exc)
        assert any(isinstance(d, error_details_pb2.ErrorInfo) and d.reason == code for d in details)
        if field:
            violations = [v.field for d in details if isinstance(d, error_details_pb2.BadRequest)
                          for v in d.field_violations]
            assert field in violations, (request, violations)
    assert gateway.run(gateway.pool.fetchval("SELECT count(*) FROM jobs")) == 0


def test_auth_and_scopes(gateway: Gateway, stub: Stub) -> None:
    exc = fails(stub.GetJob, jobs_service_pb2.GetJobRequest(job_id="job_x"))
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and error_code(exc) == "missing_api_key"
    exc = fails(stub.GetJob, jobs_service_pb2.GetJobRequest(job_id="job_x"), metadata=auth("rfk_nope"))
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and error_code(exc) == "invalid_api_key"
    read_only = _key(gateway, ["jobs:read"])
    exc = fails(stub.CreateJob, jobs_service_pb2.CreateJobRequest(prompt="x", seconds=4), metadata=auth(read_only))
    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(exc) == "insufficient_scope"
    assert stub.ListJobs(jobs_service_pb2.ListJobsRequest(), metadata=auth(read_only)).jobs == []


def _key(gateway: Gateway, scopes: list[str]) -> str:
    from reelforge_gateway import tenancy

    created = gateway.run(tenancy.create_key(gateway.pool, gateway.tenant_id, scopes))
    assert created is not None
    return created[1].plaintext


def test_another_tenants_job_is_not_found_on_every_method(gateway: Gateway, stub: Stub) -> None:
    mine = create(stub, gateway.api_key, metadata={"customer": "secret"})
    _, other_key = gateway.new_tenant("other")
    for call, request in [(stub.GetJob, jobs_service_pb2.GetJobRequest(job_id=mine.id)),
                          (stub.CancelJob, jobs_service_pb2.CancelJobRequest(job_id=mine.id))]:
        exc = fails(call, request, metadata=auth(other_key))
        assert exc.code() == grpc.StatusCode.NOT_FOUND and error_code(exc) == "job_not_found"
    watch = fails(lambda: list(stub.Watch(jobs_service_pb2.WatchRequest(job_id=mine.id), metadata=auth(other_key))))
    assert watch.code() == grpc.StatusCode.NOT_FOUND and error_code(watch) == "job_not_found"
    theirs = stub.ListJobs(jobs_service_pb2.ListJobsRequest(metadata={"customer": "secret"}),
                           metadata=auth(other_key))
    assert list(theirs.jobs) == []
    # The same idempotency key in another tenant is another request: no leak of the first tenant's job.
    keyed = create(stub, gateway.api_key, idempotency_key="shared-key")
    other = stub.CreateJob(jobs_service_pb2.CreateJobRequest(prompt="A water purifier", seconds=4,
                                                             idempotency_key="shared-key"), metadata=auth(other_key))
    assert other.job.id != keyed.id and not other.replayed
    assert stub.GetJob(jobs_service_pb2.GetJobRequest(job_id=mine.id), metadata=auth(gateway.api_key)).id == mine.id


def test_watch_sends_the_state_then_every_transition(gateway: Gateway, stub: Stub) -> None:
    job = create(stub, gateway.api_key, metadata={"customer": "w-1"})
    received: list[jobs_service_pb2.WatchResponse] = []
    first_seen = threading.Event()

    def watch() -> None:
        for message in stub.Watch(jobs_service_pb2.WatchRequest(job_id=job.id), metadata=auth(gateway.api_key),
                                  timeout=30):
            received.append(message)
            first_seen.set()

    reader = threading.Thread(target=watch)
    reader.start()
    assert first_seen.wait(10)
    steps = [("admitted", 0), ("rendering", 5), ("rendering", 40), ("rendering", 80), ("postprocessing", 90),
             ("completed", 100)]
    for state, progress in steps:  # faster than the stream re-reads: none may be skipped or repeated
        gateway.advance(job.id, state, progress)
    reader.join(30)
    assert not reader.is_alive()
    assert received[0].job.id == job.id and received[0].job.state == Q and not received[0].HasField("transition")
    transitions = [(jobs_pb2.JobState.Name(m.transition.state), m.transition.progress) for m in received[1:]]
    assert transitions == [(f"JOB_STATE_{s.upper()}", p) for s, p in steps]
    assert [m.transition.index for m in received[1:]] == list(range(1, len(steps) + 1))
    final = received[-1].job
    assert final.state == jobs_pb2.JOB_STATE_COMPLETED and final.metadata["customer"] == "w-1"

    # A finished job: the state, and the stream ends.
    again = list(stub.Watch(jobs_service_pb2.WatchRequest(job_id=job.id), metadata=auth(gateway.api_key), timeout=10))
    assert len(again) == 1 and again[0].job.state == jobs_pb2.JOB_STATE_COMPLETED


class Watcher:
    """A Watch stream read on a thread; `next` waits for the next message."""

    def __init__(self, stub: Stub, key: str, job_id: str) -> None:
        self.messages: queue.Queue[jobs_service_pb2.WatchResponse | None] = queue.Queue()
        self._call = stub.Watch(jobs_service_pb2.WatchRequest(job_id=job_id), metadata=auth(key), timeout=60)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for message in self._call:
                self.messages.put(message)
        self.messages.put(None)  # the stream ended

    def next(self, within: float) -> jobs_service_pb2.WatchResponse | None:
        return self.messages.get(timeout=within)

    def transition(self, within: float) -> tuple[int, str, int]:
        message = self.next(within)
        assert message is not None and message.HasField("transition")
        return (message.transition.index, jobs_pb2.JobState.Name(message.transition.state)[10:].lower(),
                message.transition.progress)


def test_watch_is_woken_by_the_transition_not_by_its_fallback(gateway: Gateway, stub: Stub,
                                                               grpc_app: FastAPI) -> None:
    jobs = [create(stub, gateway.api_key) for _ in range(3)]
    watchers = [Watcher(stub, gateway.api_key, job.id) for job in jobs]
    for watcher in watchers:
        assert watcher.next(10) is not None  # the job's state first
    for n, job in enumerate(jobs):
        gateway.advance(job.id, "rendering", 10 + n)
        # The fallback re-read is 60 s away: only the notification can deliver this in time.
        assert watchers[n].transition(5) == (1, "rendering", 10 + n)
    feed = grpc_app.state.notifications
    assert feed.live and feed.connections == 1  # one listening connection for every stream
    for job, watcher in zip(jobs, watchers, strict=True):
        gateway.advance(job.id, "failed", 10)
        assert watcher.transition(5) == (2, "failed", 10)
        assert watcher.next(5) is None


def test_watch_survives_the_listening_connection_being_killed(gateway: Gateway, stub: Stub,
                                                              grpc_app: FastAPI) -> None:
    job = create(stub, gateway.api_key)
    watcher = Watcher(stub, gateway.api_key, job.id)
    assert watcher.next(10) is not None
    gateway.advance(job.id, "admitted", 0)
    assert watcher.transition(5) == (1, "admitted", 0)
    feed = grpc_app.state.notifications
    pid = feed.backend_pid
    assert pid is not None and gateway.run(gateway.pool.fetchval("SELECT pg_terminate_backend($1)", pid))
    # Committed while the listener is down or reconnecting: its notification is lost, and the reconnect's
    # wake-up (not the minute-long fallback) must deliver it, then the next ones arrive by notification.
    gateway.advance(job.id, "rendering", 20)
    assert watcher.transition(10) == (2, "rendering", 20)
    deadline = time.monotonic() + 10
    while not (feed.live and feed.connections == 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert feed.connections == 2 and feed.backend_pid not in (None, pid)
    gateway.advance(job.id, "rendering", 60)
    gateway.advance(job.id, "completed", 100)
    assert watcher.transition(5) == (3, "rendering", 60)
    assert watcher.transition(5) == (4, "completed", 100)
    assert watcher.next(5) is None
