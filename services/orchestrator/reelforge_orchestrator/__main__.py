"""`python -m reelforge_orchestrator [serve]` runs the orchestrator; other commands: see cli.py.

Every instance migrates the schema and runs the outbox relay (itself elected); only the leader
consumes events and schedules. A standby is ready (it answers /readyz) and waits for the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from reelforge.orchestrator.v1 import admin_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_core.kafka import EventConsumer
from reelforge_core.service import ServiceRuntime, run_service
from reelforge_orchestrator import admin_api, cli
from reelforge_orchestrator.billing_client import BillingClient
from reelforge_orchestrator.engine import Engine
from reelforge_orchestrator.leader import Leadership
from reelforge_orchestrator.settings import OrchestratorSettings
from reelforge_orchestrator.workflow import TOPICS, Workflow

log = logging.getLogger(__name__)

SCHEMA = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"


async def start(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, OrchestratorSettings)
    pool = await runtime.database(SCHEMA, MIGRATIONS)
    billing = BillingClient(settings.billing_target, settings.billing_timeout_seconds)
    runtime.on_close(billing.close)
    leadership = Leadership(settings.database_url.get_secret_value(), SCHEMA, settings.leader_poll_seconds)
    runtime.on_close(leadership.release)
    state: dict[str, EventConsumer] = {}
    engines: list[Engine] = []

    async def ready() -> bool:
        consumer = state.get("consumer")
        return consumer is None or consumer.ready.is_set()  # a standby is ready to take over

    runtime.readiness["scheduler"] = ready

    async def lead() -> None:
        epoch = await leadership.acquire()
        engine = Engine(pool, billing, epoch, tick_seconds=settings.tick_seconds,
                        reload_seconds=settings.config_reload_seconds)
        await engine.rebuild()
        engines.append(engine)
        workflow = Workflow(pool, billing, engine)
        consumer = EventConsumer(settings.kafka_bootstrap, "orchestrator", TOPICS, workflow.handle,
                                 await runtime.producer())
        state["consumer"] = consumer
        await asyncio.gather(consumer.run(), engine.run(), leadership.watch())

    runtime.add_task("leader", lead)

    server, _ = core_grpc.create_server([admin_api.SERVICE_NAME])
    admin_pb2_grpc.add_OrchestratorAdminServicer_to_server(
        admin_api.AdminServicer(pool, lambda: engines[-1] if engines else None), server)
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    runtime.on_close(lambda: server.stop(grace=5))
    log.info("admin gRPC listening", extra={"grpc_port": port})


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
