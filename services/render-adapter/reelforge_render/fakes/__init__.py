"""Faithful fake provider servers: real HTTP on loopback, each provider's paths, JSON shapes and statuses,
with configurable latency, failure rate, 429 bursts with Retry-After, stuck jobs and real MP4 output.
Used by the tests and the benchmark; `python -m reelforge_render.fakes <provider> --port N` runs one."""
