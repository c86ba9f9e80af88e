"""The partner gRPC JobsService on the real platform: Watch sees every transition of a real job, the
admin API makes a tenant and key that work over gRPC, and tenants stay isolated."""

from __future__ import annotations

import grpc
import httpx
import pytest

from reelforge.jobs.v1 import jobs_pb2, jobs_service_pb2, jobs_service_pb2_grpc
from reelforge_local.stack import Stack, Tenant

from .helpers import TERMINAL


def _auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def test_watch_sees_every_transition_of_a_real_job(stack: Stack, tenant: Tenant) -> None:
    with grpc.insecure_channel(stack.gateway_grpc_target) as channel:
        stub = jobs_service_pb2_grpc.JobsServiceStub(channel)
        created = stub.CreateJob(jobs_service_pb2.CreateJobRequest(
            prompt="A speaker on a desk, watched over gRPC", seconds=1, size="640x360", metadata={"customer": "g-1"},
            idempotency_key="grpc-watch-1"), metadata=_auth(tenant.api_key))
        job_id = created.job.id
        messages = list(stub.Watch(jobs_service_pb2.WatchRequest(job_id=job_id), metadata=_auth(tenant.api_key),
                                   timeout=120))
        final = stub.GetJob(jobs_service_pb2.GetJobRequest(job_id=job_id), metadata=_auth(tenant.api_key))

    first, *transitions = messages
    assert first.job.id == job_id and not first.HasField("transition")
    assert jobs_pb2.JobState.Name(final.state).removeprefix("JOB_STATE_").lower() in TERMINAL
    # The snapshot's timeline plus the streamed transitions are exactly the job's whole timeline.
    seen = [(t.state, t.progress) for t in first.job.timeline] + [(m.transition.state, m.transition.progress)
                                                                   for m in transitions]
    assert seen == [(t.state, t.progress) for t in final.timeline]
    assert [m.transition.index for m in transitions] == list(range(len(first.job.timeline), len(final.timeline)))
    states = [state for state, _ in seen]
    assert states[-1] == jobs_pb2.JOB_STATE_COMPLETED, final
    for wanted in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_ADMITTED, jobs_pb2.JOB_STATE_RENDERING,
                   jobs_pb2.JOB_STATE_POSTPROCESSING):
        assert wanted in states
    assert transitions[-1].job.state == jobs_pb2.JOB_STATE_COMPLETED
    assert transitions[-1].job.metadata["customer"] == "g-1" and transitions[-1].job.HasField("cost")


def test_admin_made_tenant_works_over_grpc_and_is_isolated(stack: Stack, tenant: Tenant) -> None:
    admin = httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {stack.admin_key()}"},
                         timeout=15)
    made = admin.post("/v1/admin/tenants", json={"name": "grpc-admin-e2e"})
    assert made.status_code == 201, made.text
    key = admin.post(f"/v1/admin/tenants/{made.json()['id']}/keys", json={"scopes": ["jobs:read"]}).json()
    mine = _auth(key["key"])
    with grpc.insecure_channel(stack.gateway_grpc_target) as channel:
        stub = jobs_service_pb2_grpc.JobsServiceStub(channel)
        theirs = stub.CreateJob(jobs_service_pb2.CreateJobRequest(prompt="x", seconds=1, size="640x360"),
                                metadata=_auth(tenant.api_key)).job
        assert list(stub.ListJobs(jobs_service_pb2.ListJobsRequest(), metadata=mine).jobs) == []
        for call, request in [(stub.GetJob, jobs_service_pb2.GetJobRequest(job_id=theirs.id)),
                              (stub.Watch, jobs_service_pb2.WatchRequest(job_id=theirs.id))]:
            with pytest.raises(grpc.RpcError) as caught:
                list(call(request, metadata=mine)) if call is stub.Watch else call(request, metadata=mine)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as caught:
            stub.CancelJob(jobs_service_pb2.CancelJobRequest(job_id=theirs.id), metadata=mine)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # a jobs:read key
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateJob(jobs_service_pb2.CreateJobRequest(prompt="x", seconds=1), metadata=mine)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert admin.delete(f"/v1/admin/keys/{key['id']}").status_code == 200
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListJobs(jobs_service_pb2.ListJobsRequest(), metadata=mine)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
