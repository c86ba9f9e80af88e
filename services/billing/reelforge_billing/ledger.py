"""Double-entry postings for each billing operation. Pure: the store writes what these return.

Accounts per tenant: `available` (credit the tenant may spend) and `reserved` (held for running
jobs). Platform accounts: `revenue` (earned) and `grants` (the source of granted credit, which
goes negative as credit is handed out). Every posting list sums to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

REVENUE = "platform:revenue"
GRANTS = "platform:grants"


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


def reserve(tenant_id: str, amount: int) -> list[Posting]:
    _positive(amount, allow_zero=True)
    return _balanced([Posting(available(tenant_id), -amount), Posting(reserved(tenant_id), amount)])


def settle(tenant_id: str, held: int, charge: int) -> list[Posting]:
    if not 0 <= charge <= held:
        raise ValueError(f"charge {charge} must be between 0 and the held {held}")
    return _balanced(
        [
            Posting(reserved(tenant_id), -held),
            Posting(REVENUE, charge),
            Posting(available(tenant_id), held - charge),
        ]
    )


def release(tenant_id: str, held: int) -> list[Posting]:
    _positive(held, allow_zero=True)
    return _balanced([Posting(reserved(tenant_id), -held), Posting(available(tenant_id), held)])


def _positive(amount: int, allow_zero: bool = False) -> None:
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValueError(f"amount must be positive, got {amount}")
