"""Who pays for a job: free grants first, rounding never creates or loses a micro."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from reelforge_billing.funding import FreeGrant, fund, give_back
from reelforge_billing.pricing import Rate, price_micros

RATE = Rate("animatic", 0, 25_000)


def test_seconds_grants_cover_seconds_then_money_grants_then_credit() -> None:
    funding = fund(RATE, Decimal(10), [FreeGrant(1, "seconds", Decimal(4)), FreeGrant(2, "micros", Decimal(50_000))])
    assert funding.price == 250_000
    assert [(a.grant_id, a.used, a.micros) for a in funding.allocations] == [
        (1, Decimal(4), 100_000), (2, Decimal(50_000), 50_000)
    ]
    assert (funding.free, funding.paid) == (150_000, 100_000)


def test_a_large_grant_covers_everything_and_keeps_the_rest() -> None:
    funding = fund(RATE, Decimal(8), [FreeGrant(1, "seconds", Decimal(100))])
    assert (funding.free, funding.paid) == (200_000, 0)
    assert funding.allocations[0].used == Decimal(8)


def test_give_back_refills_the_latest_grant_first_and_never_over_refills() -> None:
    funding = fund(RATE, Decimal(10), [FreeGrant(1, "seconds", Decimal(4)), FreeGrant(2, "micros", Decimal(500_000))])
    assert funding.paid == 0
    # charged 5 s = 125,000 of the 250,000 free hold: 125,000 unused goes back to grant 2 first
    assert give_back(funding.allocations, 125_000) == [(2, Decimal(125_000))]
    # everything unused: grant 2 gets its 150,000, grant 1 its 4 s
    assert give_back(funding.allocations, 250_000) == [(2, Decimal(150_000)), (1, Decimal(4))]


@given(
    seconds=st.decimals(min_value=Decimal("0.001"), max_value=Decimal(600), places=3),
    rate=st.integers(min_value=0, max_value=1_000_000),
    grants=st.lists(
        st.tuples(st.sampled_from(["seconds", "micros"]), st.decimals(min_value=Decimal("0.001"),
                                                                     max_value=Decimal(100_000), places=3)),
        max_size=5,
    ),
)
def test_parts_always_add_up_to_the_price(seconds: Decimal, rate: int, grants: list[tuple[str, Decimal]]) -> None:
    free_grants = [
        FreeGrant(i, unit, amount if unit == "seconds" else Decimal(int(amount)))  # type: ignore[arg-type]
        for i, (unit, amount) in enumerate(grants)
    ]
    funding = fund(Rate("m", 0, rate), seconds, free_grants)
    assert funding.price == price_micros(Rate("m", 0, rate), seconds)
    assert 0 <= funding.free <= funding.price and funding.paid >= 0
    by_id = {g.id: g for g in free_grants}
    for allocation in funding.allocations:
        assert 0 < allocation.used <= by_id[allocation.grant_id].remaining
        assert allocation.micros >= 0
    for unused in (0, funding.free // 3, funding.free):
        back = dict(give_back(funding.allocations, unused))
        for allocation in funding.allocations:
            assert back.get(allocation.grant_id, Decimal(0)) <= allocation.used
