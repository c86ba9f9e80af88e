"""`python -m reelforge_orchestrator` runs the orchestrator."""

from __future__ import annotations

from pathlib import Path

from reelforge_core import topics
from reelforge_core.service import ServiceRuntime, run_service
from reelforge_orchestrator.billing_client import BillingClient
from reelforge_orchestrator.settings import OrchestratorSettings
from reelforge_orchestrator.workflow import Workflow

SCHEMA = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, OrchestratorSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS)
    billing = BillingClient(settings.billing_target, settings.billing_timeout_seconds)
    runtime.on_close(billing.close)
    workflow = Workflow(pool, billing, settings.default_provider, settings.model_providers)
    await runtime.consume(
        "orchestrator", [topics.JOBS_SUBMITTED, topics.RENDER_RESULT, topics.POSTPROCESS_RESULT], workflow.handle
    )


def main() -> None:
    run_service(OrchestratorSettings(), start)


if __name__ == "__main__":
    main()
