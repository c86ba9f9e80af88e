"""`python -m reelforge_local demo|up` — see ./run."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from reelforge_core import topics
from reelforge_core.kafka import start_when_broker_is_up
from reelforge_local.demo import main_demo, main_up


async def create_topics(bootstrap: str, partitions: int = 3) -> None:
    """Creates every topic of the platform (idempotent); for clusters the local runner does not start."""
    admin = await start_when_broker_is_up(lambda: AIOKafkaAdminClient(bootstrap_servers=bootstrap), "admin")
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in topics.all_topics() if name not in existing]
        if missing:
            await admin.create_topics([NewTopic(name, partitions, 1) for name in missing])
        print(f"topics: {len(missing)} created, {len(existing & set(topics.all_topics()))} already there")
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="reelforge_local")
    parser.add_argument("command", choices=["demo", "up", "create-topics"])
    parser.add_argument("--out", type=Path, default=Path("out"), help="where the demo leaves its MP4")
    parser.add_argument("--replicas", type=int, default=1, choices=range(1, 5),
                        help="up: instances of each service (shows horizontal scaling)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="create-topics: the Kafka to create them on")
    args = parser.parse_args()
    if args.command == "create-topics":
        asyncio.run(create_topics(args.bootstrap))
        return 0
    cache = Path(os.environ.get("REELFORGE_CACHE", ".cache"))
    run_dir = cache / "run"
    if args.command == "demo":
        return main_demo(run_dir, cache, args.out)
    return main_up(run_dir, cache, args.replicas)


if __name__ == "__main__":
    sys.exit(main())
