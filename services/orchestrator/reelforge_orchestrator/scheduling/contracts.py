"""Tenant contracts: what a partner bought, and the admission checks that follow from it."""

from __future__ import annotations

from dataclasses import dataclass, field

# Lower rank is served first. Unknown tiers rank after the known ones.
TIER_RANKS: dict[str, int] = {"enterprise": 0, "standard": 1, "free": 2}


def tier_rank(tier: str) -> int:
    return TIER_RANKS.get(tier, len(TIER_RANKS))


@dataclass(frozen=True)
class TenantContract:
    tenant_id: str
    tier: str = "standard"
    weight: float = 1.0
    max_concurrent: int = 4
    requests_per_minute: int = 600
    daily_seconds_quota: float | None = None
    monthly_seconds_quota: float | None = None
    allowed_models: frozenset[str] = field(default_factory=frozenset)  # empty: every routed model
    max_seconds: float = 60.0
    max_pixels: int = 1920 * 1080  # width x height of the largest frame allowed
    default_deadline_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError("weight must be positive")
        if self.max_concurrent < 1 or self.requests_per_minute < 1:
            raise ValueError("max_concurrent and requests_per_minute must be at least 1")

    @property
    def rank(self) -> int:
        return tier_rank(self.tier)

    def admission_problem(self, model: str, seconds: float, width: int, height: int) -> tuple[str, str] | None:
        """(code, message) if the contract does not allow this job, else None. Quotas are checked apart."""
        if self.allowed_models and model not in self.allowed_models:
            return "model_not_allowed", f"the contract does not include model {model!r}"
        if seconds > self.max_seconds:
            return "too_long", f"{seconds:g} s exceeds the contract's {self.max_seconds:g} s"
        if width * height > self.max_pixels:
            return "resolution_not_allowed", f"{width}x{height} exceeds the contract's maximum frame size"
        return None


SECONDS_PER_DAY = 86_400


def day_and_month(now: float) -> tuple[int, int]:
    """UTC day number and a month key (year * 12 + month) for epoch seconds `now`."""
    import datetime as _dt

    day = int(now // SECONDS_PER_DAY)
    date = _dt.date(1970, 1, 1) + _dt.timedelta(days=day)
    return day, date.year * 12 + date.month


@dataclass
class QuotaUsage:
    """Video seconds a tenant has used (admitted and not given back) today and this month."""

    day: int = -1
    month: int = -1
    day_seconds: float = 0.0
    month_seconds: float = 0.0

    def roll(self, now: float) -> None:
        if int(now // SECONDS_PER_DAY) == self.day:
            return
        day, month = day_and_month(now)
        if day != self.day:
            self.day, self.day_seconds = day, 0.0
        if month != self.month:
            self.month, self.month_seconds = month, 0.0

    def try_take(self, contract: TenantContract, seconds: float, now: float) -> tuple[str, str] | None:
        self.roll(now)
        if contract.daily_seconds_quota is not None and self.day_seconds + seconds > contract.daily_seconds_quota:
            return "quota_exceeded", "the contract's daily video-seconds quota is used up"
        if (contract.monthly_seconds_quota is not None
                and self.month_seconds + seconds > contract.monthly_seconds_quota):
            return "quota_exceeded", "the contract's monthly video-seconds quota is used up"
        self.day_seconds += seconds
        self.month_seconds += seconds
        return None

    def give_back(self, seconds: float) -> None:
        self.day_seconds = max(0.0, self.day_seconds - seconds)
        self.month_seconds = max(0.0, self.month_seconds - seconds)
