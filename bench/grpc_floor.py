"""What a unary gRPC call costs in Python on this machine with no work behind it: the floor under billing.

    ./run bench bench/grpc_floor.py [--seconds 10] [--concurrency 32] [--plumbing plain|core] [--tracing]

A server process answers BillingService.GetBalance with a constant; this process calls it from
`concurrency` workers for `seconds`. Prints calls/s and the CPU per call of the client and of the
server. `--plumbing core` uses reelforge_core's server (guard, tracing, health, reflection) and channel
(tracing) as the services do; `plain` uses bare grpc.aio. `--tracing` installs an SDK tracer provider in
both processes, as the services run (spans are made and batched, then dropped by the exporter).
A Reserve+Settle pair is two such calls, so
2 x (client + server CPU per call) bounds the pairs/s two idle cores can carry before any database work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reelforge.billing.v1 import billing_pb2, billing_pb2_grpc
from reelforge_core import grpc as core_grpc
from reelforge_local.infra import free_port


class _Constant(billing_pb2_grpc.BillingServiceServicer):
    async def GetBalance(
        self, request: billing_pb2.GetBalanceRequest, context: object
    ) -> billing_pb2.GetBalanceResponse:
        return billing_pb2.GetBalanceResponse(available_micros=1, currency="USD")


async def serve(port: int, plumbing: str) -> None:
    if plumbing == "core":
        server, _ = core_grpc.create_server([billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name])
    else:
        server = grpc.aio.server()
    billing_pb2_grpc.add_BillingServiceServicer_to_server(_Constant(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _install_tracing() -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    trace.set_tracer_provider(provider)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(port: int, pid: int, args: argparse.Namespace) -> None:
    channel = core_grpc.channel(f"127.0.0.1:{port}") if args.plumbing == "core" else grpc.aio.insecure_channel(
        f"127.0.0.1:{port}")
    stub = billing_pb2_grpc.BillingServiceStub(channel)
    request = billing_pb2.GetBalanceRequest(tenant_id="t")
    deadline = time.monotonic() + 120
    while True:
        try:
            await stub.GetBalance(request, timeout=1)
            break
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    calls = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal calls
        while time.monotonic() < stop_at:
            await stub.GetBalance(request, timeout=10)
            calls += 1

    stop_at = time.monotonic() + 1
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    calls = 0
    load = os.getloadavg()[0]
    before = _own_cpu(), _cpu(pid)
    started = time.monotonic()
    stop_at = started + args.seconds
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.monotonic() - started
    client, server = (_own_cpu() - before[0]) / calls * 1e3, (_cpu(pid) - before[1]) / calls * 1e3
    await channel.close()
    traced = ", SDK tracing" if args.tracing else ""
    print(f"gRPC unary floor ({args.plumbing} plumbing{traced}, {args.concurrency} workers): "
          f"{calls / elapsed:,.0f} calls/s; "
          f"CPU per call: client {client:.3f} ms, server {server:.3f} ms; a Reserve+Settle pair's two calls fit "
          f"{2000 / (2 * (client + server)):,.0f} pairs/s in 2 idle cores (load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--plumbing", choices=["plain", "core"], default="core")
    parser.add_argument("--tracing", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tracing:
        _install_tracing()
    if args.serve:
        asyncio.run(serve(args.serve, args.plumbing))
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--plumbing", args.plumbing,
                               *(["--tracing"] if args.tracing else [])])
    try:
        asyncio.run(drive(port, server.pid, args))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
