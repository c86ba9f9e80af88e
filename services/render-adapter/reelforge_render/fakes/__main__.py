"""`python -m reelforge_render.fakes <provider> [--port N] [--behaviour JSON]` serves one fake provider
on 127.0.0.1 and prints `listening <url>` once it accepts connections (demo and benchmarks)."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import threading

from reelforge_render.fakes.common import Behaviour, ServerThread

PROVIDERS = ("openai", "veo", "vertex_veo", "runway", "fal", "replicate", "wavespeed")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m reelforge_render.fakes")
    parser.add_argument("provider", choices=PROVIDERS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--behaviour", default="{}", help="JSON of fakes.common.Behaviour fields")
    args = parser.parse_args()
    module = importlib.import_module(f"reelforge_render.fakes.{args.provider}")
    server = ServerThread(module.create_app(Behaviour(**json.loads(args.behaviour))), args.port).start()
    print(f"listening {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
