"""deploy/compose and deploy/k8s are schema-valid and agree with the services the local runner runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reelforge_core import topics
from reelforge_local.stack import SERVICES, Stack

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_RESOURCES = [DEPLOY / "k8s" / name for name in yaml.safe_load(
    (DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]]


def _cli(name: str) -> str:
    path = shutil.which(name) or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / name)
    assert Path(path).exists(), f"{name} missing (requirements-dev.txt)"
    return path


def test_compose_file_matches_the_compose_spec() -> None:
    done = subprocess.run(
        [_cli("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(DEPLOY / "compose" / "docker-compose.yml")],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_manifests_are_valid_in_strict_mode() -> None:
    done = subprocess.run(
        [_cli("kubernetes-validate"), "--strict", "--quiet", *map(str, K8S_RESOURCES)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
def test_every_service_is_deployed_with_its_own_settings_prefix(spec: object) -> None:
    name, module, prefix = spec.name, spec.module, spec.env_prefix  # type: ignore[attr-defined]
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())["services"][name]
    assert compose["environment"]["SERVICE_MODULE"] == module
    assert all(key.startswith(f"REELFORGE_{prefix}_") for key in compose["environment"] if key != "SERVICE_MODULE")

    documents = list(yaml.safe_load_all((DEPLOY / "k8s" / f"{name}.yaml").read_text()))
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["SERVICE_MODULE"]["value"] == module
    assert {f"REELFORGE_{prefix}_DATABASE_URL", f"REELFORGE_{prefix}_KAFKA_BOOTSTRAP"} <= env.keys()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_create_topics_command_is_idempotent_on_a_real_broker(stack: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reelforge_local", "create-topics", "--bootstrap", stack.bootstrap],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"0 created, {len(topics.all_topics())} already there" in done.stdout


def test_lag_autoscalers_follow_the_consumer_groups_the_services_use() -> None:
    """An HPA whose group label names no real consumer group would never scale: check each against
    the services' own group names and the lag metric they export."""
    from reelforge_core.metrics import CONSUMER_LAG
    from reelforge_postprocess.worker import CONSUMER as POSTPROCESS_GROUP
    from reelforge_render.store import CONSUMER as RENDER_GROUP

    documents = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "autoscaling.yaml").read_text()) if d]
    lag: dict[str, str] = {}
    for hpa in (d for d in documents if d["kind"] == "HorizontalPodAutoscaler"):
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "External":
                assert metric["external"]["metric"]["name"] == CONSUMER_LAG._name  # type: ignore[attr-defined]
                lag[hpa["spec"]["scaleTargetRef"]["name"]] = metric["external"]["metric"]["selector"][
                    "matchLabels"]["group"]
    assert lag == {"render-adapter": RENDER_GROUP, "postprocess": POSTPROCESS_GROUP}
    deployed = {d["metadata"]["name"] for path in K8S_RESOURCES for d in yaml.safe_load_all(path.read_text())
                if d and d["kind"] == "Deployment"}
    assert set(lag) <= deployed
