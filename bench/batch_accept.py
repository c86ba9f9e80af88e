"""Batch acceptance: how long a 10,000-line JSON-lines upload takes to become durable (batch row, 10,000
job rows and 10,000 JobSubmitted outbox events in one transaction), on a real PostgreSQL, without Kafka.
Prints:

  - parse + validate + expand the lines (CPU only, in this process)
  - the durable write alone (one transaction: COPY into jobs, COPY into the outbox)
  - POST /v1/batches end to end over HTTP against a gateway process (each round a fresh batch)

Half the lines name a built-in template (rendered, preset merged), half are plain job bodies.

    ./run bench bench/batch_accept.py [--lines 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from starlette.datastructures import State

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_submit import gateway_settings, prepare, report_stored, wait_for_port  # noqa: E402
from scratch import scratch_postgres  # noqa: E402

from reelforge_core import db  # noqa: E402
from reelforge_gateway import batches, http_workers, jsonl, store  # noqa: E402
from reelforge_gateway.__main__ import SCHEMA  # noqa: E402
from reelforge_gateway.api.job_templates import expand, new_jobs  # noqa: E402
from reelforge_gateway.api.jobs import JobRequest  # noqa: E402
from reelforge_gateway.moderation import Moderator  # noqa: E402
from reelforge_gateway.templates import BUILTINS  # noqa: E402
from reelforge_local.infra import free_port  # noqa: E402
from tests.conftest import CACHE  # noqa: E402

BATCH_ID = store.new_id("batch")
STATE = State({"moderator": Moderator([]), "content": None})  # what finishing a job reads (no options here)


def catalogue(lines: int, round_: int) -> bytes:
    rows = []
    for i in range(lines):
        if i % 2:
            rows.append({"prompt": f"Speaker #{i} on a walnut desk, round {round_}", "seconds": 4,
                         "metadata": {"sku": f"SP-{i}"}})
        else:
            rows.append({"template": "ecommerce-listing-9x16", "metadata": {"sku": f"TS-{i}"},
                         "variables": {"product": f"T-shirt #{i}, round {round_}", "price": "$19"}})
    return "\n".join(json.dumps(row) for row in rows).encode() + b"\n"


def validate(data: bytes, tenant_id: str) -> list[store.NewJob]:
    parsed, errors = jsonl.parse(data, 100_000)
    assert not errors
    jobs: list[store.NewJob] = []
    moderator = Moderator([])
    for line in parsed:
        request = JobRequest.model_validate(line.value)
        template = BUILTINS[request.template] if request.template else None
        jobs += new_jobs(expand(request, template, moderator), STATE, tenant_id, BATCH_ID, line.number)
    return jobs


async def write_only(dsn: str, tenant_id: str, jobs: list[store.NewJob]) -> float:
    pool = await db.create_pool(dsn, SCHEMA, 2)
    try:
        started = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            await batches.insert_batch(conn, batches.NewBatch(BATCH_ID, tenant_id, "upload", len(jobs)), jobs)
        return time.perf_counter() - started
    finally:
        await pool.close()


async def run(args: argparse.Namespace, dsn: str, port: int) -> None:
    tenant_id, key = await prepare(dsn)
    data = catalogue(args.lines, 0)
    started = time.perf_counter()
    jobs = validate(data, tenant_id)
    cpu = time.perf_counter() - started
    print(f"parse + validate + expand {args.lines} lines ({len(data) / 1e6:.1f} MB): {cpu * 1000:.0f} ms"
          f" ({args.lines / cpu:.0f} lines/s)")
    write = await write_only(dsn, tenant_id, jobs)
    print(f"durable write alone (batch + {len(jobs)} jobs + {len(jobs)} outbox events, one transaction):"
          f" {write * 1000:.0f} ms ({len(jobs) / write:.0f} jobs/s)")

    # The service's own HTTP process (http_workers.run_worker), as bench/gateway_submit.py runs it.
    settings = http_workers.with_shared_secret(gateway_settings(dsn, str(CACHE / "bench-batches" / "content"), 0))
    processes = http_workers.Workers.start(settings, port, 1)
    try:
        await wait_for_port(port, 1)
        timings = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            for round_ in range(1, args.rounds + 1):
                body = catalogue(args.lines, round_)
                started = time.perf_counter()
                response = await client.post("/v1/batches", content=body,
                                             headers={"Content-Type": "application/jsonl"})
                elapsed = time.perf_counter() - started
                assert response.status_code == 202, response.text[:300]
                assert response.json()["total_jobs"] == args.lines
                timings.append(elapsed)
                print(f"POST /v1/batches round {round_}: {elapsed * 1000:.0f} ms ({args.lines / elapsed:.0f} jobs/s)")
        await report_stored(dsn)
        median = statistics.median(timings)
        print(f"{args.lines}-line batch accepted end to end: median {median * 1000:.0f} ms"
              f" ({args.lines / median:.0f} jobs/s) over {len(timings)} rounds")
    finally:
        await processes.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {multiprocessing.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with scratch_postgres("batches") as postgres:
        asyncio.run(run(args, postgres.dsn, free_port()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
