from __future__ import annotations

from decimal import Decimal

import pytest

from reelforge_billing import ledger
from reelforge_billing.pricing import NoRate, Rate, format_money, pick_rate, price_micros, seconds_of

RATES = [
    Rate("animatic", 640 * 360, 10_000),
    Rate("animatic", 1280 * 720, 25_000),
    Rate("animatic", 1920 * 1080, 50_000),
    Rate("other", 1920 * 1080, 1),
]


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(640, 360, 10_000), (1280, 720, 25_000), (720, 1280, 25_000), (1024, 1024, 50_000), (1920, 1080, 50_000)],
)
def test_smallest_covering_tier_wins(width: int, height: int, expected: int) -> None:
    assert pick_rate(RATES, "animatic", width, height).micros_per_second == expected


def test_no_rate_for_unknown_model_or_size() -> None:
    with pytest.raises(NoRate):
        pick_rate(RATES, "sora-9", 640, 360)
    with pytest.raises(NoRate):
        pick_rate(RATES, "animatic", 3840, 2160)


def test_price_is_exact_and_rounds_up_to_the_micro() -> None:
    rate = Rate("animatic", 0, 25_000)
    assert price_micros(rate, Decimal("8")) == 200_000
    assert price_micros(rate, seconds_of(8.0)) == 200_000
    assert price_micros(Rate("x", 0, 3), Decimal("0.001")) == 1
    assert price_micros(rate, Decimal("0")) == 0
    with pytest.raises(ValueError):
        price_micros(rate, Decimal("-1"))


def test_seconds_of_avoids_float_noise() -> None:
    assert seconds_of(0.1 + 0.2) == Decimal("0.300")
    assert seconds_of(7.9999999) == Decimal("8.000")


def test_format_money() -> None:
    assert format_money(200_000) == "0.20 USD"


def _total(postings: list[ledger.Posting]) -> int:
    return sum(p.amount for p in postings)


def test_every_operation_balances() -> None:
    for postings in (
        ledger.grant("t", 1_000),
        ledger.reserve("t", 300),
        ledger.settle("t", held=300, charge=200),
        ledger.settle("t", held=300, charge=300),
        ledger.release("t", 300),
    ):
        assert _total(postings) == 0


def test_reserve_then_settle_moves_money_to_revenue_and_returns_the_rest() -> None:
    balances: dict[str, int] = {}
    for postings in (ledger.grant("t", 1_000), ledger.reserve("t", 300), ledger.settle("t", 300, 200)):
        for p in postings:
            balances[p.account] = balances.get(p.account, 0) + p.amount
    assert balances[ledger.available("t")] == 800
    assert balances.get(ledger.reserved("t"), 0) == 0
    assert balances[ledger.REVENUE] == 200


def test_charge_above_hold_or_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        ledger.settle("t", held=100, charge=101)
    with pytest.raises(ValueError):
        ledger.grant("t", 0)
    with pytest.raises(ValueError):
        ledger.reserve("t", -5)
