"""Rate-card arithmetic. Money is integer micros; seconds are Decimal; nothing here touches floats."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal


class NoRate(Exception):
    pass


@dataclass(frozen=True)
class Rate:
    model: str
    max_pixels: int
    micros_per_second: int


def seconds_of(value: float) -> Decimal:
    """Seconds as billed: to the millisecond, from the float the wire carries."""
    return Decimal(repr(value)).quantize(Decimal("0.001"))


def pick_rate(rates: list[Rate], model: str, width: int, height: int) -> Rate:
    """The rate of the smallest resolution tier of `model` that covers width x height."""
    pixels = width * height
    fitting = [r for r in rates if r.model == model and r.max_pixels >= pixels]
    if not fitting:
        raise NoRate(f"no rate for model {model!r} at {width}x{height}")
    return min(fitting, key=lambda r: r.max_pixels)


def price_micros(rate: Rate, seconds: Decimal) -> int:
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    return int((Decimal(rate.micros_per_second) * seconds).to_integral_value(rounding=ROUND_CEILING))


def format_money(micros: int, currency: str = "USD") -> str:
    return f"{Decimal(micros) / Decimal(1_000_000):.2f} {currency}"
