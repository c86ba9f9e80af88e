"""A per-pool circuit breaker: opens on the error rate, half-opens after a cool-down with probes."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields, replace
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


# What an operator may set (the admin API checks it; the process settings have the same lower bounds).
MAX_WINDOW = 10_000
MAX_PROBES = 1_000
MAX_OPEN_SECONDS = 86_400.0


@dataclass(frozen=True)
class CircuitOverrides:
    """One pool's own breaker policy: each field set replaces the process default, None keeps it."""

    window: int | None = None
    min_calls: int | None = None
    error_rate_to_open: float | None = None
    open_seconds: float | None = None
    half_open_probes: int | None = None

    def over(self, defaults: CircuitPolicy) -> CircuitPolicy:
        """The policy in force: these overrides on top of the process defaults."""
        changes = {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}
        return replace(defaults, **changes) if changes else defaults

    @property
    def is_default(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


def policy_problems(overrides: CircuitOverrides, defaults: CircuitPolicy) -> list[str]:
    """Everything wrong with `overrides` (empty when it may be stored), in words an operator can act on."""
    problems = []
    o = overrides
    if o.window is not None and not 1 <= o.window <= MAX_WINDOW:
        problems.append(f"window must be between 1 and {MAX_WINDOW} outcomes (got {o.window})")
    if o.min_calls is not None and not 1 <= o.min_calls <= MAX_WINDOW:
        problems.append(f"min_calls must be between 1 and {MAX_WINDOW} (got {o.min_calls})")
    if o.error_rate_to_open is not None and not (math.isfinite(o.error_rate_to_open)
                                                 and 0 < o.error_rate_to_open <= 1):
        problems.append(f"error_rate must be above 0 and at most 1 (got {o.error_rate_to_open})")
    if o.open_seconds is not None and not (math.isfinite(o.open_seconds) and 0 < o.open_seconds <= MAX_OPEN_SECONDS):
        problems.append(f"open_seconds must be above 0 and at most {MAX_OPEN_SECONDS:g} (got {o.open_seconds})")
    if o.half_open_probes is not None and not 1 <= o.half_open_probes <= MAX_PROBES:
        problems.append(f"half_open_probes must be between 1 and {MAX_PROBES} (got {o.half_open_probes})")
    if not problems:
        policy = o.over(defaults)
        if policy.min_calls > policy.window:
            def source(value: int | None) -> str:
                return "" if value is not None else " (the process default)"
            problems.append(
                f"min_calls {policy.min_calls}{source(o.min_calls)} exceeds window {policy.window}"
                f"{source(o.window)}: the breaker could never open")
    return problems


class CircuitBreaker:
    def __init__(self, policy: CircuitPolicy | None = None) -> None:
        self.policy = policy or CircuitPolicy()
        self.state = CircuitState.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=self.policy.window)
        self._errors = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

    def set_policy(self, policy: CircuitPolicy) -> None:
        """Applies a changed policy to this live breaker, keeping its state and its most recent outcomes.

        An open breaker's cool-down counts from when it opened, so a shorter `open_seconds` lets probes in
        at once; a half-open one whose probes already met a lowered `half_open_probes` closes. Changed
        thresholds are judged at the next outcome."""
        if policy == self.policy:
            return
        self.policy = policy
        if self._outcomes.maxlen != policy.window:
            self._outcomes = deque(self._outcomes, maxlen=policy.window)
            self._errors = sum(1 for ok in self._outcomes if not ok)
        if self.state is CircuitState.HALF_OPEN and self._probe_successes >= policy.half_open_probes:
            self._close()

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
                self._close()
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

    def _close(self) -> None:
        self.state = CircuitState.CLOSED
        self._outcomes.clear()
        self._errors = 0
        self._probes_in_flight = 0
        self._probe_successes = 0

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
