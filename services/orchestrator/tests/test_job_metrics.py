"""Job metrics over the real scheduler and PostgreSQL: outcomes by tenant/model/status, time to
first frame, render results by pool; label values stay bounded."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from reelforge_orchestrator.job_metrics import OTHER, BoundedLabel

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
