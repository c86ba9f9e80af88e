"""`python -m reelforge_orchestrator [serve]` runs the orchestrator; other commands: see cli.py.

Every instance migrates the schema and runs the outbox relay (itself elected); only the leader
consumes events and schedules. A standby is ready (it answers /readyz) and waits for the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from fastapi import FastAPI

from reelforge.orchestrator.v1 import admin_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_core import transient
from reelforge_core.kafka import EventConsumer
from reelforge_core.service import ServiceRuntime, run_service
from reelforge_orchestrator import admin_api, cli
from reelforge_orchestrator.billing_client import BillingClient
from reelforge_orchestrator.console import Console
from reelforge_orchestrator.engine import Engine
from reelforge_orchestrator.leader import Leadership, LostLeadership
from reelforge_orchestrator.settings import OrchestratorSettings
from reelforge_orchestrator.workflow import TOPICS, Workflow

log = logging.getLogger(__name__)

SCHEMA = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, OrchestratorSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS)
    billing = BillingClient(settings.billing_target, settings.billing_timeout_seconds, settings.operator_token)
    runtime.on_close(billing.close)
    leadership = Leadership(settings.database_url.get_secret_value(), SCHEMA, settings.leader_poll_seconds)
    runtime.on_close(leadership.release)
    state: dict[str, EventConsumer] = {}
    engines: list[Engine] = []

    async def ready() -> bool:
        consumer = state.get("consumer")
        return consumer is None or consumer.ready.is_set()  # a standby is ready to take over

    runtime.readiness["scheduler"] = ready

    async def lead_once() -> None:
        epoch = await leadership.acquire()
        engine = Engine(pool, billing, epoch, settings.scheduling_policy(), tick_seconds=settings.tick_seconds,
                        reload_seconds=settings.config_reload_seconds)
        await engine.rebuild()
        engines.append(engine)
        workflow = Workflow(pool, billing, engine)
        consumer = EventConsumer(settings.kafka_bootstrap, "orchestrator", TOPICS, workflow.handle,
                                 await runtime.producer())
        state["consumer"] = consumer
        async with asyncio.TaskGroup() as group:  # one failing cancels the others
            group.create_task(consumer.run())
            group.create_task(engine.run())
            group.create_task(leadership.watch())

    async def lead() -> None:
        """Leads while it can. Losing the database (or the lock) steps down and contends again,
        rather than exiting: with no standby, exiting would stop all scheduling."""
        while True:
            try:
                await lead_once()
            except* Exception as failures:
                if not all(_recoverable(e) for e in _leaves(failures)):
                    raise
                log.warning("stepped down; contending for leadership again",
                            extra={"error": "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(failures))})
            finally:
                state.pop("consumer", None)
                await leadership.release()
            await asyncio.sleep(settings.leader_poll_seconds)

    runtime.add_task("leader", lead)

    server, _ = core_grpc.create_server([admin_api.SERVICE_NAME], admin_api.operator_auth(settings.operator_token))
    admin = admin_api.AdminServicer(pool, lambda: engines[-1] if engines else None,
                                    settings.scheduling_policy().circuit)
    admin_pb2_grpc.add_OrchestratorAdminServicer_to_server(admin, server)
    runtime.http_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    runtime.http_app.include_router(Console(admin, pool, billing, settings.operator_token).router())
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    runtime.on_close(lambda: server.stop(grace=5))
    log.info("admin gRPC listening", extra={"grpc_port": port})


def _leaves(group: BaseExceptionGroup[Exception]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def _recoverable(exc: BaseException) -> bool:
    return isinstance(exc, LostLeadership) or transient.is_transient(exc)


def main() -> None:
    parser = argparse.ArgumentParser(prog="reelforge-orchestrator")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the orchestrator (default)")
    cli.add_commands(sub)
    args = parser.parse_args()
    if args.command in (None, "serve"):
        run_service(OrchestratorSettings(), start)
    else:
        cli.run_command(args)


if __name__ == "__main__":
    main()
