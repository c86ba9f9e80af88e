"""One render adapter against the fake OpenAI Videos API with 2,000 renders in flight at once.

The adapter core runs in this process exactly as in the service (RenderWorker accepting requests into
Postgres, the Tracker submitting and polling over real HTTP, results through the outbox); the fake
provider runs in a separate process so its CPU is not counted. Phases:
  1. accept 2,000 RenderRequested (the consumer's path: one INSERT each) and submit them all;
  2. steady state with all 2,000 in flight, polled every POLL_INTERVAL s with jitter: polls/s, RSS per job;
  3. a sample of renders completes (download, ffprobe, content store, outbox) and the rest are cancelled
     (cancel at the provider, outbox): CPU per 1,000 of each.
Prints each figure as its phase ends, with the load average beside it and the fake provider's own CPU (the
other side of every poll, on the same cores). Bounded by BENCH_LIMIT seconds (by default 60 s plus 0.6 s per
job, 1,260 s for 2,000: on a shared 2-core machine at load 20 the 2,000 submissions alone take minutes); each
phase's wait scales with the job count too. On a timeout it prints every task's await chain, gives the
cancellation 15 s, closes its PostgreSQL clients and exits non-zero instead of hanging. BENCH_JOBS sets the
number in flight (2,000). Usage:
./run bench bench/render_adapter_inflight.py
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from reelforge.jobs.v1 import jobs_pb2
from reelforge_core import db, topics
from reelforge_local.infra import PostgresServer
from reelforge_render.__main__ import MIGRATIONS, SCHEMA
from reelforge_render.fakes.harness import adapter
from reelforge_render.providers.config import ProviderConfig
from reelforge_render.providers.openai import OpenAIVideos

JOBS = int(os.environ.get("BENCH_JOBS", "2000"))
POLL_INTERVAL = 5.0  # providers ask for polls every few seconds; 2,000 jobs at 5 s is 400 polls/s
STEADY_SECONDS = 10.0
COMPLETE_SAMPLE = 40
T0 = time.perf_counter()
POOLS: list[asyncpg.Pool] = []  # closed hard after a timeout: PostgreSQL's shutdown waits for its clients
ROOT = Path(__file__).resolve().parent.parent


class BenchTimeout(Exception):
    pass


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f}"


FAKE_PID = 0


def cpu_fake() -> float:
    """CPU seconds the fake provider process has used (it serves every submit, poll and cancel)."""
    fields = Path(f"/proc/{FAKE_PID}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def wait_until(predicate: Callable[[], Awaitable[bool]], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            # not SystemExit: raised inside the event loop it would skip the adapter's clean shutdown
            raise BenchTimeout(f"bench: timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def each(count: int, step: Callable[[int], Awaitable[None]], concurrency: int = 32) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            await step(i)
    await asyncio.gather(*(one(i) for i in range(count)))


async def run(dsn: str, fake_url: str, content_dir: Path) -> None:
    os.environ["BENCH_FAKE_KEY"] = "test-key"
    config = ProviderConfig(kind="openai", base_url=f"{fake_url}/v1", api_key_env="BENCH_FAKE_KEY",
                            poll_interval_seconds=POLL_INTERVAL, max_connections=64, timeout_seconds=600)
    pool = await db.create_pool(dsn, SCHEMA, 10)
    POOLS.append(pool)
    await db.migrate(pool, SCHEMA, MIGRATIONS)
    spec = jobs_pb2.JobSpec(prompt="A teapot, rendered slowly.", seconds=4, width=320, height=180, model="sora-2")
    async with httpx.AsyncClient(base_url=fake_url) as fake, adapter(
            dsn, content_dir, {"sora": OpenAIVideos("sora", config)}, render_timeout=600, workers=64,
            pool=pool) as a:
        # warm up: one render end to end, so pools, imports and the fake's MP4 exist before measuring
        await fake.post("/_fake/behaviour", json={"latency_s": 0.2})
        await a.request("warmup/r1", "sora", spec)
        await a.result("warmup/r1", within=60)
        await fake.post("/_fake/behaviour", json={"latency_s": 3600})
        rss_before = rss_kb()
        print(f"bench: warm after {time.perf_counter() - T0:.1f} s; accepting and submitting", flush=True)

        # 1. accept and submit
        cpu0, t0 = cpu_self(), time.perf_counter()
        # Requests arrive on many Kafka partitions at once; 32 handled concurrently, each one INSERT.
        await each(JOBS, lambda i: a.request(f"job{i}/r1", "sora", spec))
        accept_s, accept_cpu = time.perf_counter() - t0, cpu_self() - cpu0
        print(f"bench: accepted {JOBS} in {accept_s:.1f} s", flush=True)

        async def all_submitted() -> bool:
            return int(await pool.fetchval("SELECT count(*) FROM renders WHERE state = 'submitted'")) >= JOBS
        await wait_until(all_submitted, "submissions", 60 + 0.1 * JOBS)
        submit_s, submit_cpu = time.perf_counter() - t0, cpu_self() - cpu0
        created = (await fake.get("/_fake/stats")).json()["created"]
        duplicates = (await fake.get("/_fake/submissions")).json()["duplicates"]
        print(f"bench: the fake created {created - 1} jobs for {JOBS} renders; "
              f"{len(duplicates)} submitted twice", flush=True)

        # 2. steady state: everything in flight, polled
        print(f"bench: {JOBS} submitted in {submit_s:.1f} s ({load()}); measuring steady state", flush=True)
        await asyncio.sleep(2.0)  # let the first round of polls spread out
        polls0, cpu1, fake1, t1 = a.tracker.polls, cpu_self(), cpu_fake(), time.perf_counter()
        await asyncio.sleep(STEADY_SECONDS)
        window = time.perf_counter() - t1
        polls = a.tracker.polls - polls0
        poll_cpu, fake_cpu = cpu_self() - cpu1, cpu_fake() - fake1
        rss_in_flight = rss_kb()
        in_flight = len(a.tracker)
        print(f"status polls sustained:        {polls / window:8.1f} polls/s over {window:.1f} s "
              f"with {in_flight} in flight "
              f"(poll interval {POLL_INTERVAL:g} s ±20%: {JOBS / POLL_INTERVAL:.0f}/s asked; {load()})")
        print(f"CPU per 1,000 polls:           {1000 * poll_cpu / max(polls, 1):8.3f} CPU-s in the adapter, "
              f"{1000 * fake_cpu / max(polls, 1):.3f} in the fake provider; the adapter used "
              f"{100 * poll_cpu / window:.0f}% of a core, the fake {100 * fake_cpu / window:.0f}%")
        print(f"memory per in-flight job:      {(rss_in_flight - rss_before) / JOBS:8.2f} KB RSS "
              f"({rss_before / 1024:.1f} MB before, {rss_in_flight / 1024:.1f} MB with {in_flight} in flight)",
              flush=True)

        # 3a. a sample completes: download, ffprobe, content store, outbox
        finished0, cpu2, child2, t2 = a.tracker.finished, cpu_self(), cpu_children(), time.perf_counter()
        await fake.post("/_fake/release", params={"count": COMPLETE_SAMPLE})

        async def sample_done() -> bool:
            return a.tracker.finished - finished0 >= COMPLETE_SAMPLE
        # A released render is seen at its next poll: allow two full rounds at the poll rate just measured
        # (on a starved machine polls slip far past POLL_INTERVAL).
        await wait_until(sample_done, "completions", 40 + 2 * max(POLL_INTERVAL, in_flight * window / max(polls, 1)))
        complete_s = time.perf_counter() - t2
        complete_cpu, complete_child = cpu_self() - cpu2, cpu_children() - child2

        # 3b. the rest are cancelled: cancel at the provider, result through the outbox
        rest = len(a.tracker)
        cpu3, t3 = cpu_self(), time.perf_counter()
        await each(JOBS, lambda i: a.cancel(f"job{i}/r1", "sora"))

        async def all_done() -> bool:
            return len(a.tracker) == 0
        await wait_until(all_done, "cancellations", 60 + 0.1 * JOBS)
        cancel_s, cancel_cpu = time.perf_counter() - t3, cpu_self() - cpu3
        results = int(await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", topics.RENDER_RESULT))
        stats = (await fake.get("/_fake/stats")).json()
    await pool.close()

    print(json.dumps({"jobs_in_flight": in_flight, "submitted_at_provider": created - 1}))
    print(f"accept {JOBS} requests:        {accept_s:6.2f} s wall, {accept_cpu:6.2f} CPU-s "
          f"({1000 * accept_cpu / JOBS:.2f} CPU-s per 1,000)")
    print(f"accept + submit {JOBS}:        {submit_s:6.2f} s wall, {submit_cpu:6.2f} CPU-s "
          f"({1000 * submit_cpu / JOBS:.2f} CPU-s per 1,000 jobs)")
    # Phases 3a and 3b run while every other render is still polled: their CPU includes those polls (taking
    # them out at the steady-state rate was tried; that rate varies too much between windows on a shared machine).
    print(f"complete {COMPLETE_SAMPLE} (download+ffprobe+store+outbox, with the others' polls): "
          f"{complete_s:.2f} s wall, "
          f"{1000 * complete_cpu / COMPLETE_SAMPLE:.2f} CPU-s per 1,000 in the adapter "
          f"+ {1000 * complete_child / COMPLETE_SAMPLE:.2f} CPU-s per 1,000 in ffprobe")
    print(f"cancel {rest} (provider DELETE + outbox, with the others' polls): {cancel_s:.2f} s wall, "
          f"{1000 * cancel_cpu / rest:.2f} CPU-s per 1,000")
    polls_per_job_60s = 60 / POLL_INTERVAL
    lifecycle = (submit_cpu / JOBS + polls_per_job_60s * poll_cpu / max(polls, 1)
                 + (complete_cpu + complete_child) / COMPLETE_SAMPLE) * 1000
    print(f"CPU per 1,000 jobs, whole life of a 60 s render polled every {POLL_INTERVAL:g} s: {lifecycle:.1f} CPU-s "
          f"(accept+submit, {polls_per_job_60s:.0f} polls, download+probe+store+report)")
    print(f"results in the outbox: {results} (expected {JOBS + 1}); fake saw {stats['requests']} requests, "
          f"{stats['throttled']} throttled; {load()}")


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines a task is awaiting, outermost first (Task.get_stack shows only the outermost)."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        chain.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def print_tasks(title: str) -> None:
    """Where the tasks are waiting: each distinct await chain once, with how many tasks wait there."""
    print(title, flush=True)
    waiting: dict[str, int] = {}
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            where = " > ".join(await_chain(task))
            waiting[where] = waiting.get(where, 0) + 1
    for where, count in sorted(waiting.items(), key=lambda item: -item[1]):
        print(f"  {count:5d} x {where}", flush=True)


async def bounded(work: Coroutine[Any, Any, None], limit: float) -> None:
    """Runs `work` for at most `limit` seconds; on timeout prints what every task was waiting for,
    cancels it and gives up waiting for the cancellation after 15 s (the caller then exits)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait([task], timeout=limit)
    if not done:
        print_tasks(f"bench: still running after {limit:g} s; tasks:")
        task.cancel()
        await asyncio.wait([task], timeout=15)
        if not task.done():
            print_tasks("bench: cancelling did not finish within 15 s; pending tasks:")
        raise BenchTimeout(f"bench: timed out after {limit:g} s")
    task.result()


def main() -> None:
    if os.environ.get("BENCH_DEBUG"):
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["BENCH_DEBUG"]), repeat=True)
    started = time.monotonic()
    print(f"bench: starting PostgreSQL and the fake provider ({load()})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on timeout(1) too
    cache = Path(os.environ.get("REELFORGE_CACHE", ROOT / ".cache"))
    shutil.rmtree(cache / "bench-postgres", ignore_errors=True)
    postgres = PostgresServer.start(cache / "bench-postgres")
    fake = subprocess.Popen([sys.executable, "-m", "reelforge_render.fakes", "openai"], stdout=subprocess.PIPE,
                            text=True)
    global FAKE_PID
    FAKE_PID = fake.pid
    try:
        line = fake.stdout.readline() if fake.stdout else ""
        if not line.startswith("listening "):
            raise SystemExit(f"fake provider did not start: {line!r}")
        dsn = postgres.new_database("bench")
        with tempfile.TemporaryDirectory() as content:
            # Bounded (see the docstring); BENCH_LIMIT changes it.
            limit = float(os.environ.get("BENCH_LIMIT", str(60 + 0.6 * JOBS)))
            # Not asyncio.run: after a timeout its clean-up would wait for every task to finish cancelling.
            loop = asyncio.new_event_loop()
            loop.run_until_complete(bounded(run(dsn, line.split()[1], Path(content)), limit))
            loop.close()
    except BenchTimeout as exc:
        print(exc, flush=True)
        for pool in POOLS:
            pool.terminate()
        failed = True
    else:
        failed = False
    finally:
        fake.terminate()
        try:
            fake.wait(10)
        except subprocess.TimeoutExpired:
            fake.kill()
        postgres.stop()
    print(f"bench took {time.monotonic() - started:.1f} s")
    if failed:
        os._exit(1)  # tasks that would not cancel must not keep the process alive


if __name__ == "__main__":
    main()
