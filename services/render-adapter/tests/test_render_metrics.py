"""Render metrics: the duration histogram by provider, model and status, with bounded labels."""

from __future__ import annotations

from prometheus_client import REGISTRY

from reelforge_render import metrics


def _count(**labels: str) -> float:
    return REGISTRY.get_sample_value("reelforge_render_seconds_count", labels) or 0.0


def test_render_duration_by_provider_model_and_status() -> None:
    ok = {"provider": "fal-metrics", "model": "veo-3", "status": "ok"}
    failed = {**ok, "status": "failed"}
    before_ok, before_failed = _count(**ok), _count(**failed)
    le_30 = REGISTRY.get_sample_value("reelforge_render_seconds_bucket", {**ok, "le": "30.0"}) or 0.0
    metrics.record("fal-metrics", True, "", 8.0, 0.0, 100, model="veo-3", elapsed_seconds=25.0)
    metrics.record("fal-metrics", False, "provider_timeout", 0.0, 0.0, 0, model="veo-3", elapsed_seconds=700.0)
    metrics.record("fal-metrics", True, "", 8.0, 0.0, 100, model="veo-3")  # no start known: not observed
    assert _count(**ok) - before_ok == 1 and _count(**failed) - before_failed == 1
    assert REGISTRY.get_sample_value("reelforge_render_seconds_bucket", {**ok, "le": "30.0"}) == le_30 + 1


def test_label_values_past_the_limit_are_other() -> None:
    models = metrics.model_label
    for i in range(models.limit + 5):
        metrics.record("fal-metrics", True, "", 1.0, 0.0, 0, model=f"runaway-{i}", elapsed_seconds=1.0)
    assert (REGISTRY.get_sample_value("reelforge_render_seconds_count",
                                      {"provider": "fal-metrics", "model": "other", "status": "ok"}) or 0) >= 5
