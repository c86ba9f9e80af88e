"""The scheduler core: contracts, capacity pools, fair queues, routing and circuit breakers.

Pure: no I/O and no clock. Every call takes `now` (seconds, any epoch) so the same code runs the
live orchestrator and the simulated-time benchmark.
"""
