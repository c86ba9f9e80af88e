"""Who pays for a job: free grants first (seconds grants, then money grants, soonest expiry first),
then the tenant's credit. Pure: the store loads the grants and writes what these return."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from reelforge_billing.pricing import Rate, price_micros

Unit = Literal["seconds", "micros"]
MILLI = Decimal("0.001")


@dataclass(frozen=True)
class FreeGrant:
    id: int
    unit: Unit
    remaining: Decimal


@dataclass(frozen=True)
class Allocation:
    grant_id: int
    unit: Unit
    used: Decimal  # in the grant's unit
    micros: int  # what that part is worth for this job


@dataclass(frozen=True)
class Funding:
    price: int
    allocations: list[Allocation]

    @property
    def free(self) -> int:
        return sum(a.micros for a in self.allocations)

    @property
    def paid(self) -> int:
        return self.price - self.free


def fund(rate: Rate, seconds: Decimal, grants: list[FreeGrant]) -> Funding:
    """Splits the price of `seconds` at `rate` between `grants` (in the order given) and the tenant."""
    price = price_micros(rate, seconds)
    allocations: list[Allocation] = []
    seconds_left = seconds
    covered = 0
    for grant in (g for g in grants if g.unit == "seconds"):
        use = min(grant.remaining, seconds_left)
        if use <= 0:
            continue
        seconds_left -= use
        # Cumulative, so rounding never makes the parts add up to more or less than the price.
        covered_now = price - price_micros(rate, seconds_left)
        allocations.append(Allocation(grant.id, "seconds", use, covered_now - covered))
        covered = covered_now
    for grant in (g for g in grants if g.unit == "micros"):
        use_micros = min(int(grant.remaining), price - covered)
        if use_micros <= 0:
            continue
        allocations.append(Allocation(grant.id, "micros", Decimal(use_micros), use_micros))
        covered += use_micros
    return Funding(price, allocations)


def give_back(allocations: list[Allocation], unused_free: int) -> list[tuple[int, Decimal]]:
    """What each grant gets back when `unused_free` micros of its hold were not charged.

    The most recently used grants are refilled first; a seconds grant gets back the matching share of
    its seconds (rounded down to the millisecond, so a grant never gains).
    """
    back: list[tuple[int, Decimal]] = []
    left = unused_free
    for allocation in reversed(allocations):
        if left <= 0:
            break
        part = min(allocation.micros, left)
        left -= part
        if part == allocation.micros:
            amount = allocation.used
        elif allocation.unit == "micros":
            amount = Decimal(part)
        else:
            amount = (allocation.used * part / allocation.micros).quantize(MILLI, rounding=ROUND_DOWN)
        if amount > 0:
            back.append((allocation.grant_id, amount))
    return back
