"""Operator commands: change a contract or a pool, pause/drain a pool, show the configuration.

They write the orchestrator's own tables; the leader reloads them within `config_reload_seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reelforge_core import db
from reelforge_orchestrator import config_store
from reelforge_orchestrator.scheduling.contracts import TenantContract
from reelforge_orchestrator.scheduling.pools import PoolSpec
from reelforge_orchestrator.settings import OrchestratorSettings

SCHEMA = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"


def add_commands(sub: Any) -> None:
    contract = sub.add_parser("set-contract", help="create or change a tenant's contract ('*' is the default)")
    contract.add_argument("tenant_id")
    contract.add_argument("--tier", default="standard")
    contract.add_argument("--weight", type=float, default=1.0)
    contract.add_argument("--max-concurrent", type=int, default=8)
    contract.add_argument("--rpm", type=int, default=600)
    contract.add_argument("--daily-seconds", type=float)
    contract.add_argument("--monthly-seconds", type=float)
    contract.add_argument("--models", default="", help="comma-separated; empty: every routed model")
    contract.add_argument("--max-seconds", type=float, default=60.0)
    contract.add_argument("--max-pixels", type=int, default=3840 * 2160)
    contract.add_argument("--deadline-seconds", type=float)
    pool = sub.add_parser("set-pool", help="create or change a capacity pool (and route its model to it); its breaker"
                                             " policy is kept (admin SetPoolBreaker changes it)")
    pool.add_argument("pool_id")
    pool.add_argument("--provider", required=True)
    pool.add_argument("--model", required=True)
    pool.add_argument("--slots", type=int, default=4)
    pool.add_argument("--rpm", type=int, default=600)
    pool.add_argument("--cost", default="{}", help='JSON micros per second by resolution, e.g. {"720p": 50000}')
    pool.add_argument("--latency-per-second", type=float, default=1.0)
    pool.add_argument("--gpus", type=int, default=0)
    pool.add_argument("--gpus-per-job", type=int, default=8)
    pool.add_argument("--route-position", type=int)
    mode = sub.add_parser("pool-mode", help="pause, drain or resume a pool")
    mode.add_argument("pool_id")
    mode.add_argument("mode", choices=["pause", "drain", "resume"])
    sub.add_parser("show-config", help="print contracts, pools and routes as JSON")


async def run(args: argparse.Namespace, settings: OrchestratorSettings) -> str:
    pool = await db.create_pool(settings.database_url.get_secret_value(), SCHEMA, 2)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        if args.command == "set-contract":
            models = frozenset(m for m in args.models.split(",") if m)
            await config_store.upsert_contract(pool, TenantContract(
                args.tenant_id, tier=args.tier, weight=args.weight, max_concurrent=args.max_concurrent,
                requests_per_minute=args.rpm, daily_seconds_quota=args.daily_seconds,
                monthly_seconds_quota=args.monthly_seconds, allowed_models=models, max_seconds=args.max_seconds,
                max_pixels=args.max_pixels, default_deadline_seconds=args.deadline_seconds))
        elif args.command == "set-pool":
            await config_store.upsert_pool(pool, PoolSpec(
                args.pool_id, args.provider, args.model, slots=args.slots, requests_per_minute=args.rpm,
                cost_micros_per_second={k: int(v) for k, v in json.loads(args.cost).items()},
                latency_seconds_per_output_second=args.latency_per_second, gpus=args.gpus,
                gpus_per_job=args.gpus_per_job), args.route_position)
        elif args.command == "pool-mode":
            paused, draining = {"pause": (True, False), "drain": (False, True), "resume": (False, False)}[args.mode]
            if not await config_store.set_pool_mode(pool, args.pool_id, paused, draining):
                raise SystemExit(f"no pool {args.pool_id!r}")
        config = await config_store.load(pool)
        contracts = ([config.default_contract] if config.default_contract else []) + config.contracts
        return json.dumps({
            "contracts": [{**asdict(c), "allowed_models": sorted(c.allowed_models)} for c in contracts],
            "pools": [asdict(p) for p in config.pools],
            "pool_modes": config.pool_modes,
            "routes": config.routes,
        }, indent=2)
    finally:
        await pool.close()


def run_command(args: argparse.Namespace) -> None:
    print(asyncio.run(run(args, OrchestratorSettings())))
