"""Local runner: real Kafka and PostgreSQL without Docker, the five services, the demo."""

import os

# The runner (and the test harness importing it) forks servers from a process that may already run gRPC
# threads. gRPC's own fork handlers then run in the child between fork and exec and can crash it
# (seen: PostgreSQL dying with SIGSEGV at start). Nothing here needs gRPC to survive a fork, so they are off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
