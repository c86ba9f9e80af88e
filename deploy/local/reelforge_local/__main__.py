"""`python -m reelforge_local demo|up` — see ./run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reelforge_local.demo import main_demo, main_up


def main() -> int:
    parser = argparse.ArgumentParser(prog="reelforge_local")
    parser.add_argument("command", choices=["demo", "up"])
    parser.add_argument("--out", type=Path, default=Path("out"), help="where the demo leaves its MP4")
    args = parser.parse_args()
    cache = Path(os.environ.get("REELFORGE_CACHE", ".cache"))
    run_dir = cache / "run"
    if args.command == "demo":
        return main_demo(run_dir, cache, args.out)
    return main_up(run_dir, cache)


if __name__ == "__main__":
    sys.exit(main())
