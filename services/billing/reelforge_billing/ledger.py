"""Double-entry postings for each billing operation. Pure: the store writes what these return.

Accounts per tenant: `available` (credit the tenant may spend; negative = owed by a postpaid
tenant) and `reserved` (held for running jobs). Platform accounts: `revenue` (earned), `grants`
(the source of granted credit, which goes negative as credit is handed out), `promotions` (pays
for the free grants a job uses, goes negative) and `free-usage` (what free grants paid for).
Every posting list sums to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

REVENUE = "platform:revenue"
GRANTS = "platform:grants"
PROMOTIONS = "platform:promotions"
FREE_USAGE = "platform:free-usage"


def available(tenant_id: str) -> str:
    return f"tenant:{tenant_id}:available"


def reserved(tenant_id: str) -> str:
    return f"tenant:{tenant_id}:reserved"


@dataclass(frozen=True)
class Posting:
    account: str
    amount: int


class Unbalanced(Exception):
    pass


def _balanced(postings: list[Posting]) -> list[Posting]:
    if sum(p.amount for p in postings) != 0:
        raise Unbalanced(postings)
    return [p for p in postings if p.amount != 0]


def grant(tenant_id: str, amount: int) -> list[Posting]:
    _positive(amount)
    return _balanced([Posting(GRANTS, -amount), Posting(available(tenant_id), amount)])


def reserve(tenant_id: str, amount: int, free: int = 0) -> list[Posting]:
    """Holds `amount` of the tenant's credit plus `free` paid for by free grants."""
    _positive(amount, allow_zero=True)
    _positive(free, allow_zero=True)
    return _balanced(
        [
            Posting(available(tenant_id), -amount),
            Posting(PROMOTIONS, -free),
            Posting(reserved(tenant_id), amount + free),
        ]
    )


def settle(tenant_id: str, held: int, charge: int, held_free: int = 0) -> list[Posting]:
    """Charges `charge` out of the hold (free part first); the rest goes back where it came from.

    `held` is the whole hold, of which `held_free` came from free grants.
    """
    if not 0 <= charge <= held:
        raise ValueError(f"charge {charge} must be between 0 and the held {held}")
    if not 0 <= held_free <= held:
        raise ValueError(f"free part {held_free} must be between 0 and the held {held}")
    charge_free = min(charge, held_free)
    charge_paid = charge - charge_free
    return _balanced(
        [
            Posting(reserved(tenant_id), -held),
            Posting(REVENUE, charge_paid),
            Posting(FREE_USAGE, charge_free),
            Posting(available(tenant_id), (held - held_free) - charge_paid),
            Posting(PROMOTIONS, held_free - charge_free),
        ]
    )


def release(tenant_id: str, held: int, held_free: int = 0) -> list[Posting]:
    return settle(tenant_id, held, 0, held_free)


def refund(tenant_id: str, paid: int, free: int = 0) -> list[Posting]:
    """Gives back part of a charge: the paid part to the tenant's credit, the free part to promotions."""
    _positive(paid, allow_zero=True)
    _positive(free, allow_zero=True)
    return _balanced(
        [
            Posting(REVENUE, -paid),
            Posting(available(tenant_id), paid),
            Posting(FREE_USAGE, -free),
            Posting(PROMOTIONS, free),
        ]
    )


def split_charge(charge: int, held_free: int) -> tuple[int, int]:
    """(free part, paid part) of a charge: free grants pay first."""
    free = min(charge, held_free)
    return free, charge - free


def _positive(amount: int, allow_zero: bool = False) -> None:
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValueError(f"amount must be positive, got {amount}")
