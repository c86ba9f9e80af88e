"""Job metrics over the real scheduler and PostgreSQL: outcomes by tenant/model/status, time to
first frame, render results by pool; label values stay bounded."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from reelforge_orchestrator import config_store
from reelforge_orchestrator import engine as engine_module
from reelforge_orchestrator.job_metrics import OTHER, BoundedLabel
from reelforge_orchestrator.scheduling.pools import PoolSpec

from . import test_live_scheduling
from .test_live_scheduling import Harness

h = test_live_scheduling.h  # the harness fixture


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.asyncio
async def test_outcomes_first_frame_and_render_results(h: Harness) -> None:
    tenant = "metrics-tenant"
    before = {
        "completed": _value("reelforge_jobs_finished_total", tenant=tenant, model="animatic", status="completed"),
        "failed": _value("reelforge_jobs_finished_total", tenant=tenant, model="animatic", status="failed"),
        "code": _value("reelforge_job_failures_total", model="animatic", code="content_policy"),
        "first_frames": _value("reelforge_job_time_to_first_frame_seconds_count", model="animatic"),
        "ok": _value("reelforge_render_results_total", pool="animatic", provider="animatic", status="ok"),
        "error": _value("reelforge_render_results_total", pool="animatic", provider="animatic", status="error"),
        "charged": _value("reelforge_job_charged_micros_total", tenant=tenant, model="animatic"),
        "seconds": _value("reelforge_job_output_seconds_total", tenant=tenant, model="animatic"),
    }
    good, bad = await h.submit(tenant), await h.submit(tenant)
    await h.engine.step()
    await h.render_result(good)
    await h.postprocess_result(good)
    await h.render_result(bad, ok=False, code="content_policy")
    assert (await h.state(good))["state"] == "completed" and (await h.state(bad))["state"] == "failed"

    def delta(key: str, name: str, **labels: str) -> float:
        return _value(name, **labels) - before[key]

    assert delta("completed", "reelforge_jobs_finished_total", tenant=tenant, model="animatic", status="completed") == 1
    assert delta("failed", "reelforge_jobs_finished_total", tenant=tenant, model="animatic", status="failed") == 1
    assert delta("code", "reelforge_job_failures_total", model="animatic", code="content_policy") == 1
    assert delta("first_frames", "reelforge_job_time_to_first_frame_seconds_count", model="animatic") == 1
    assert delta("ok", "reelforge_render_results_total", pool="animatic", provider="animatic", status="ok") == 1
    assert delta("error", "reelforge_render_results_total", pool="animatic", provider="animatic",
                 status="error") == 1
    assert delta("charged", "reelforge_job_charged_micros_total", tenant=tenant, model="animatic") == 900
    assert delta("seconds", "reelforge_job_output_seconds_total", tenant=tenant, model="animatic") == 4.0


def test_bounded_label_maps_values_past_its_limit_to_other() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


@pytest.mark.asyncio
async def test_gpu_pool_gauges_and_gpu_seconds_held(h: Harness) -> None:
    pool = PoolSpec("gpu-metrics", "selfhosted", "gpu-metrics-model", gpus=16, gpus_per_job=8,
                    gpu_seconds_per_output_second=8.0)
    await config_store.upsert_pool(h.pool, pool, routes_position=0)
    await h.engine.reload()
    held_before = _value("reelforge_pool_gpu_seconds_total", pool="gpu-metrics")
    jobs = [await h.submit("gpu-tenant", model="gpu-metrics-model", seconds=4.0) for _ in range(3)]
    await h.engine.step()  # two fit (8 GPUs each); the third waits
    assert [(await h.state(j))["state"] for j in jobs] == ["rendering", "rendering", "admitted"]
    assert (_value("reelforge_jobs_active", state="rendering"), _value("reelforge_jobs_active", state="admitted"),
            _value("reelforge_jobs_active", state="postprocessing")) == (2, 1, 0)
    assert _value("reelforge_pool_gpus", pool="gpu-metrics") == 16
    assert _value("reelforge_pool_gpus_in_use", pool="gpu-metrics") == 16
    # 4 s of 1280x720 at 8 GPU-seconds per 1080p second, for each of the two running renders
    expected = 2 * pool.gpu_seconds(4.0, 1280, 720)
    assert _value("reelforge_pool_gpu_seconds_in_use", pool="gpu-metrics") == pytest.approx(expected)
    assert _value("reelforge_pool_gpus_in_use", pool="animatic") == 0  # a slot pool has no GPUs of ours

    h.clock.now += 10.0
    await h.render_result(jobs[0])  # frees 8 GPUs; the third job takes them
    await h.engine.step()
    assert _value("reelforge_pool_gpu_seconds_total", pool="gpu-metrics") - held_before == pytest.approx(160.0)
    assert (await h.state(jobs[2]))["state"] == "rendering"
    await h.render_result(jobs[1])
    await h.render_result(jobs[2])
    h.clock.now += 5.0
    await h.engine.step()
    h.engine._observe()
    assert _value("reelforge_pool_gpus_in_use", pool="gpu-metrics") == 0
    assert _value("reelforge_pool_gpu_seconds_in_use", pool="gpu-metrics") == 0
    # integrated with the count seen at the previous observation (16 GPUs): at most one observation
    # interval (1 s live) of error per change
    assert _value("reelforge_pool_gpu_seconds_total", pool="gpu-metrics") - held_before == pytest.approx(240.0)


@pytest.mark.asyncio
async def test_tenant_gauges_past_the_label_limit_add_up_as_other(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "tenant_label", BoundedLabel(1))
    await config_store.set_pool_mode(h.pool, "animatic", paused=True, draining=False)
    await h.engine.reload()
    for tenant, jobs in (("first-tenant", 1), ("second-tenant", 2), ("third-tenant", 3)):
        for _ in range(jobs):
            await h.submit(tenant)
    await h.engine.step()
    h.engine._observe()
    assert _value("reelforge_scheduler_tenant_waiting", tenant="first-tenant", tier="standard") == 1
    assert _value("reelforge_scheduler_tenant_waiting", tenant=OTHER, tier="standard") == 5
    assert _value("reelforge_scheduler_tenant_waiting", tenant="second-tenant", tier="standard") == 0
