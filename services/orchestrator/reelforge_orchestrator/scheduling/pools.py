"""Capacity pools: one per provider and model, with slots or GPUs, a rate limit, prices and health."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from reelforge_orchestrator.scheduling.circuit import CircuitBreaker, CircuitOverrides, CircuitPolicy, CircuitState

FULL_HD_PIXELS = 1920 * 1080
# About 8 H100s for a minute to make a minute of 1080p: 8 GPU-seconds per output second.
DEFAULT_GPU_SECONDS_PER_OUTPUT_SECOND = 8.0
DEFAULT_GPUS_PER_JOB = 8


def resolution_class(width: int, height: int) -> str:
    short = min(width, height)
    if short <= 480:
        return "480p"
    if short <= 720:
        return "720p"
    if short <= 1080:
        return "1080p"
    return "4k"


@dataclass(frozen=True)
class PoolSpec:
    pool_id: str
    provider: str
    model: str
    slots: int = 4                       # concurrency agreed with the provider (ignored for GPU pools)
    requests_per_minute: int = 600
    cost_micros_per_second: dict[str, int] = field(default_factory=dict)  # by resolution class
    latency_seconds_per_output_second: float = 1.0  # expected until observed
    fixed_latency_seconds: float = 0.0
    gpus: int = 0                        # > 0: a self-hosted GPU pool counted in GPUs
    gpus_per_job: int = DEFAULT_GPUS_PER_JOB
    gpu_seconds_per_output_second: float = DEFAULT_GPU_SECONDS_PER_OUTPUT_SECOND  # at 1080p
    # the pool's own breaker policy over the process defaults
    circuit: CircuitOverrides = field(default_factory=CircuitOverrides)

    @property
    def is_gpu_pool(self) -> bool:
        return self.gpus > 0

    @property
    def capacity(self) -> int:
        return self.gpus if self.is_gpu_pool else self.slots

    @property
    def units_per_job(self) -> int:
        return min(self.gpus_per_job, self.gpus) if self.is_gpu_pool else 1

    def serves(self, width: int, height: int) -> bool:
        return self.serves_class(resolution_class(width, height))

    def serves_class(self, resolution: str) -> bool:
        return not self.cost_micros_per_second or resolution in self.cost_micros_per_second

    def cost_micros(self, seconds: float, width: int, height: int) -> int:
        return self.cost_for(resolution_class(width, height), seconds)

    def cost_for(self, resolution: str, seconds: float) -> int:
        return int(self.cost_micros_per_second.get(resolution, 0) * seconds)

    def gpu_seconds(self, seconds: float, width: int, height: int) -> float:
        return seconds * self.gpu_seconds_per_output_second * (width * height) / FULL_HD_PIXELS


class PoolState:
    """A pool's live state: what it is running, its rate window, its breaker, observed latency."""

    __slots__ = (
        "_default_circuit",
        "_spec",
        "_starts",
        "capacity",
        "circuit",
        "draining",
        "failures",
        "in_use",
        "latency_per_second",
        "paused",
        "pool_id",
        "provider",
        "successes",
        "units",
    )

    def __init__(self, spec: PoolSpec, circuit: CircuitPolicy | None = None) -> None:
        """`circuit` is the process-wide breaker policy; the spec's own overrides go on top of it."""
        self._default_circuit = circuit or CircuitPolicy()
        self.circuit = CircuitBreaker(spec.circuit.over(self._default_circuit))
        self.spec = spec
        self.in_use = 0
        self.paused = False
        self.draining = False
        self._starts: deque[float] = deque()
        self.latency_per_second = spec.latency_seconds_per_output_second
        self.successes = 0
        self.failures = 0

    @property
    def spec(self) -> PoolSpec:
        return self._spec

    @spec.setter
    def spec(self, spec: PoolSpec) -> None:
        self._spec = spec
        self.pool_id = spec.pool_id
        self.provider = spec.provider
        self.capacity = spec.capacity
        self.units = spec.units_per_job
        self.circuit.set_policy(spec.circuit.over(self._default_circuit))  # live: the breaker keeps its state

    @property
    def free(self) -> int:
        return self.capacity - self.in_use

    def rate_allows(self, now: float) -> bool:
        starts = self._starts
        limit = self._spec.requests_per_minute
        if len(starts) < limit:
            return True
        while starts and starts[0] <= now - 60.0:
            starts.popleft()
        return len(starts) < limit

    def accepting(self) -> bool:
        return not (self.paused or self.draining)

    def can_start(self, now: float) -> bool:
        """Room for one more job right now (capacity, rate, breaker, not paused)."""
        if self.in_use + self.units > self.capacity or self.paused or self.draining:
            return False
        if len(self._starts) >= self._spec.requests_per_minute and not self.rate_allows(now):
            return False
        return self.circuit.state is CircuitState.CLOSED or self.circuit.allows(now)

    def estimated_seconds(self, seconds: float, width: int, height: int) -> float:
        spec = self.spec
        if spec.is_gpu_pool:
            return spec.fixed_latency_seconds + spec.gpu_seconds(seconds, width, height) / spec.units_per_job
        return spec.fixed_latency_seconds + seconds * self.latency_per_second

    def start(self, now: float) -> int:
        units = self.units
        self.in_use += units
        starts = self._starts
        starts.append(now)
        if len(starts) > self._spec.requests_per_minute:
            starts.popleft()
        if self.circuit.state is not CircuitState.CLOSED:
            self.circuit.on_dispatch()
        return units

    def finish(self, units: int, ok: bool | None, now: float, elapsed: float | None = None,
               output_seconds: float = 0.0) -> None:
        """A job left the pool. `ok` None: it left without a verdict on the pool (cancelled, bad input)."""
        self.in_use = max(0, self.in_use - units)
        if ok is None:
            return
        self.circuit.record(ok, now)
        if ok:
            self.successes += 1
            if elapsed is not None and output_seconds > 0 and not self.spec.is_gpu_pool:
                observed = max(0.0, elapsed - self.spec.fixed_latency_seconds) / output_seconds
                self.latency_per_second += 0.2 * (observed - self.latency_per_second)
        else:
            self.failures += 1

    @property
    def utilisation(self) -> float:
        return self.in_use / self.spec.capacity if self.spec.capacity else 0.0
