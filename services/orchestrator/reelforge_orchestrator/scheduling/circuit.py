"""A per-pool circuit breaker: opens on the error rate, half-opens after a cool-down with probes."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitPolicy:
    window: int = 20               # last N outcomes
    min_calls: int = 5             # no verdict on fewer
    error_rate_to_open: float = 0.5
    open_seconds: float = 30.0
    half_open_probes: int = 2      # concurrent probes allowed; all must succeed to close


class CircuitBreaker:
    def __init__(self, policy: CircuitPolicy | None = None) -> None:
        self.policy = policy or CircuitPolicy()
        self.state = CircuitState.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=self.policy.window)
        self._errors = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

    def allows(self, now: float) -> bool:
        """Whether a new request may go to the pool now (moves open -> half-open after the cool-down)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            if now - self._opened_at < self.policy.open_seconds:
                return False
            self.state = CircuitState.HALF_OPEN
            self._probes_in_flight = 0
            self._probe_successes = 0
        return self._probes_in_flight < self.policy.half_open_probes

    def on_dispatch(self) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._probes_in_flight += 1

    def record(self, ok: bool, now: float) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            if not ok:
                self._open(now)
                return
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self.state = CircuitState.CLOSED
                self._outcomes.clear()
                self._errors = 0
            return
        if self.state is CircuitState.OPEN:
            return  # a late result from before it opened
        if len(self._outcomes) == self._outcomes.maxlen and not self._outcomes[0]:
            self._errors -= 1
        self._outcomes.append(ok)
        if not ok:
            self._errors += 1
        calls = len(self._outcomes)
        if calls >= self.policy.min_calls and self._errors / calls >= self.policy.error_rate_to_open:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self._opened_at = now
        self._outcomes.clear()
        self._errors = 0
        self._probes_in_flight = 0
        self._probe_successes = 0

    @property
    def error_rate(self) -> float:
        return self._errors / len(self._outcomes) if self._outcomes else 0.0
