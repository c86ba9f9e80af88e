"""The ledger in Postgres: each operation is one transaction, idempotent by job id (refunds by refund id).

Lock order, the same in every operation so they cannot deadlock: the tenant's `available` account,
then its free grants, then the reservation, then the other accounts in name order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

import asyncpg

from reelforge_billing import budget, ledger
from reelforge_billing.funding import Allocation, FreeGrant, Funding, fund, give_back
from reelforge_billing.group_commit import GroupCommit, Item
from reelforge_billing.pricing import NoRate, Rate, pick_rate, price_micros


class InsufficientCredit(Exception):
    pass


class UnknownReservation(Exception):
    pass


class ReservationClosed(Exception):
    pass


class RefundRefused(Exception):
    pass


Mode = Literal["prepaid", "postpaid"]


@dataclass(frozen=True)
class Balance:
    available: int
    reserved: int
    spent: int
    free_micros: int = 0
    free_seconds: Decimal = Decimal(0)
    credit_limit: int = 0
    mode: str = "prepaid"


@dataclass(frozen=True)
class Quote:
    """What a job would cost and who would pay, without holding anything."""

    price: int
    free: int
    paid: int
    allowed: bool
    reason: str
    balance: Balance


@dataclass(frozen=True)
class Profile:
    plan_id: str
    mode: str
    credit_limit: int
    monthly_budget: int | None


_PRICE_RULES = """
SELECT DISTINCT ON (max_pixels) model, max_pixels, micros_per_second
FROM price_rules
WHERE model = $1 AND effective_from <= coalesce($4::timestamptz, now())
  AND (tenant_id = $2 OR (tenant_id IS NULL AND plan_id = $3))
ORDER BY max_pixels, (tenant_id IS NOT NULL) DESC, effective_from DESC, id DESC
"""

_RESERVE_STATE = """
SELECT a.balance, coalesce(p.plan_id, 'default') AS plan_id, coalesce(p.mode, 'prepaid') AS mode,
       coalesce(p.credit_limit_micros, 0) AS credit_limit_micros, r.tenant_id AS job_tenant, r.held_micros AS job_held
FROM accounts a
LEFT JOIN billing_profiles p ON p.tenant_id = $3
LEFT JOIN reservations r ON r.job_id = $2
WHERE a.id = $1
FOR UPDATE OF a
"""

_SETTLE_STATE = """
SELECT r.*, p.monthly_budget_micros
FROM accounts a
JOIN reservations r ON r.job_id = $2
LEFT JOIN billing_profiles p ON p.tenant_id = $3
WHERE a.id = $1
FOR UPDATE OF a, r
"""

# A ledger transaction and its entries in one statement; cached balances (tenant accounts only) after.
_POST = """
WITH txn AS (
    INSERT INTO ledger_transactions (kind, tenant_id, job_id, ref) VALUES ($1, $2, $3, $4) RETURNING id
)
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT txn.id, u.account, u.amount FROM txn, unnest($5::text[], $6::bigint[]) AS u(account, amount)
"""

_UPDATE_CACHED = """
UPDATE accounts SET balance = balance + u.amount
FROM unnest($1::text[], $2::bigint[]) AS u(account, amount) WHERE accounts.id = u.account
"""

_LIVE_GRANTS = """
SELECT id, unit, remaining FROM free_grants
WHERE tenant_id = $1 AND remaining > 0 AND (expires_at IS NULL OR expires_at > now())
ORDER BY expires_at NULLS LAST, id
"""


_FAST = {
    "reserve": "SELECT * FROM reserve_fast($1, $2, $3, $4, $5, $6)",
    "settle": "SELECT * FROM settle_fast($1, $2, $3)",
    "release": "SELECT * FROM release_fast($1, $2)",
}
_FAST_ARGS: dict[str, Callable[[Item], tuple[object, ...]]] = {
    "reserve": lambda i: (i.tenant_id, i.job_id, i.model, i.width, i.height, i.seconds),
    "settle": lambda i: (i.tenant_id, i.job_id, i.seconds),
    "release": lambda i: (i.tenant_id, i.job_id),
}


class LedgerStore:
    def __init__(self, pool: asyncpg.Pool, group_commit: bool = True, batches_in_flight: int = 2) -> None:
        """With `group_commit`, concurrent fast-path calls share one statement and one commit (group_commit.py);
        without, each is its own statement."""
        self._pool = pool
        self._tenants_with_accounts: set[str] = set()
        self.group_commit = GroupCommit(pool, max_in_flight=batches_in_flight) if group_commit else None

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # -- configuration ------------------------------------------------------------------------
    async def grant(self, tenant_id: str, amount: int, reference: str | None = None) -> bool:
        """Adds prepaid credit (a top-up or a purchase) to the tenant's available balance.

        With a `reference` (the payment's id) it is applied once: False when it already was."""
        await self._ensure_accounts(tenant_id)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await self._lock_tenant(conn, tenant_id)
                await self._post(conn, "grant", tenant_id, None, ledger.grant(tenant_id, amount), ref=reference)
        except asyncpg.UniqueViolationError:
            return False
        return True

    async def add_free_grant(
        self, tenant_id: str, unit: Literal["seconds", "micros"], amount: Decimal, expires_at: datetime | None
    ) -> int:
        if amount <= 0:
            raise ValueError("a free grant must be positive")
        grant_id: int = await self._pool.fetchval(
            "INSERT INTO free_grants (tenant_id, unit, amount, remaining, expires_at) VALUES ($1, $2, $3, $3, $4)"
            " RETURNING id",
            tenant_id, unit, amount, expires_at,
        )
        return grant_id

    async def set_profile(
        self, tenant_id: str, plan_id: str = "default", mode: Mode = "prepaid", credit_limit: int = 0,
        monthly_budget: int | None = None,
    ) -> None:
        if mode == "prepaid" and credit_limit:
            raise ValueError("a prepaid tenant has no credit limit")
        await self._pool.execute(
            "INSERT INTO billing_profiles (tenant_id, plan_id, mode, credit_limit_micros, monthly_budget_micros)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO UPDATE SET plan_id = $2, mode = $3,"
            " credit_limit_micros = $4, monthly_budget_micros = $5",
            tenant_id, plan_id, mode, credit_limit, monthly_budget,
        )

    async def add_plan(self, plan_id: str, name: str) -> None:
        await self._pool.execute(
            "INSERT INTO plans (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = $2", plan_id, name
        )

    async def set_price(
        self, model: str, max_pixels: int, micros_per_second: int, *, plan_id: str | None = None,
        tenant_id: str | None = None, effective_from: datetime | None = None,
    ) -> None:
        """Adds a price: for a plan or as a tenant's override, from `effective_from` (default: now)."""
        if (plan_id is None) == (tenant_id is None):
            raise ValueError("a price belongs to exactly one of a plan or a tenant")
        await self._pool.execute(
            "INSERT INTO price_rules (plan_id, tenant_id, model, max_pixels, micros_per_second, effective_from)"
            " VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))",
            plan_id, tenant_id, model, max_pixels, micros_per_second, effective_from,
        )

    async def set_provider_cost(
        self, pool: str, model: str, max_pixels: int, micros_per_second: int, effective_from: datetime | None = None
    ) -> None:
        await self._pool.execute(
            "INSERT INTO provider_costs (pool, model, max_pixels, micros_per_second, effective_from)"
            " VALUES ($1, $2, $3, $4, coalesce($5, now()))",
            pool, model, max_pixels, micros_per_second, effective_from,
        )

    async def profile(self, tenant_id: str, conn: asyncpg.Connection | None = None) -> Profile:
        row = await (conn or self._pool).fetchrow("SELECT * FROM billing_profiles WHERE tenant_id = $1", tenant_id)
        if row is None:
            return Profile("default", "prepaid", 0, None)
        return Profile(row["plan_id"], row["mode"], int(row["credit_limit_micros"]), row["monthly_budget_micros"])

    async def rate_for(
        self, conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, model: str, width: int, height: int,
        at: datetime | None = None, plan_id: str | None = None,
    ) -> Rate:
        if plan_id is None:
            plan_id = (await self.profile(tenant_id, conn)).plan_id  # type: ignore[arg-type]
        rows = await conn.fetch(_PRICE_RULES, model, tenant_id, plan_id, at)
        rates = [Rate(r["model"], r["max_pixels"], r["micros_per_second"]) for r in rows]
        return pick_rate(rates, model, width, height)

    async def provider_rate(
        self, conn: asyncpg.Connection | asyncpg.Pool, pool: str, model: str, width: int, height: int,
        at: datetime,
    ) -> Rate | None:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (max_pixels) model, max_pixels, micros_per_second FROM provider_costs"
            " WHERE pool = $1 AND model = $2 AND effective_from <= $3"
            " ORDER BY max_pixels, effective_from DESC, id DESC",
            pool, model, at,
        )
        try:
            return pick_rate([Rate(r["model"], r["max_pixels"], r["micros_per_second"]) for r in rows],
                             model, width, height)
        except NoRate:
            return None

    # -- quota, reserve, settle, release, refund ---------------------------------------------
    async def check_quota(
        self, tenant_id: str, model: str, width: int, height: int, seconds: Decimal
    ) -> Quote:
        async with self._pool.acquire() as conn:
            profile = await self.profile(tenant_id, conn)
            rate = await self.rate_for(conn, tenant_id, model, width, height, plan_id=profile.plan_id)
            grants = [FreeGrant(r["id"], r["unit"], r["remaining"]) for r in await conn.fetch(_LIVE_GRANTS, tenant_id)]
            funding = fund(rate, seconds, grants)
        balance = await self.balance(tenant_id)
        room = balance.available + balance.credit_limit
        allowed = funding.paid <= room
        reason = "" if allowed else f"job needs {funding.paid} micros of credit, tenant has {room}"
        return Quote(funding.price, funding.free, funding.paid, allowed, reason, balance)

    async def reserve(
        self, tenant_id: str, job_id: str, model: str, width: int, height: int, seconds: Decimal
    ) -> int:
        """Holds the job's price (free grants first); returns the held amount (the same on a repeated call)."""
        await self._ensure_accounts(tenant_id)
        status, amount = await self._fast(Item("reserve", tenant_id, job_id, seconds, model, width, height))
        if status == "held":
            return int(amount or 0)
        if status == "unknown":
            raise UnknownReservation("no reservation for this job and tenant")
        if status == "no_rate":
            raise NoRate(f"no rate for model {model!r} at {width}x{height}")
        if status == "insufficient":
            raise InsufficientCredit(f"job needs more micros than the tenant has ({amount} available)")
        async with self._pool.acquire() as conn, conn.transaction():
            # One round trip: lock the tenant, read its profile and any earlier reservation of this job.
            state = await conn.fetchrow(_RESERVE_STATE, ledger.available(tenant_id), job_id, tenant_id)
            if state["job_tenant"] is not None:
                self._same_tenant(state["job_tenant"], tenant_id)
                return int(state["job_held"])
            rate = await self.rate_for(conn, tenant_id, model, width, height, plan_id=state["plan_id"])
            available = int(state["balance"])
            grants = [
                FreeGrant(r["id"], r["unit"], r["remaining"])
                for r in await conn.fetch(_LIVE_GRANTS + " FOR UPDATE", tenant_id)
            ]
            funding = fund(rate, seconds, grants)
            limit = int(state["credit_limit_micros"]) if state["mode"] == "postpaid" else 0
            if available - funding.paid < -limit:
                raise InsufficientCredit(
                    f"job needs {funding.paid} micros, tenant has {available + limit} available"
                )
            inserted = await conn.fetchval(
                "INSERT INTO reservations (job_id, tenant_id, model, width, height, seconds, micros_per_second,"
                " held_micros, held_free_micros, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'held')"
                " ON CONFLICT (job_id) DO NOTHING RETURNING true",
                job_id, tenant_id, model, width, height, seconds, rate.micros_per_second, funding.price,
                funding.free,
            )
            if not inserted:  # a concurrent duplicate won the race; its hold stands
                return int(await conn.fetchval("SELECT held_micros FROM reservations WHERE job_id = $1", job_id))
            await self._use_grants(conn, job_id, funding)
            await self._post(
                conn, "reserve", tenant_id, job_id, ledger.reserve(tenant_id, funding.paid, funding.free)
            )
            return funding.price

    async def settle(self, tenant_id: str, job_id: str, seconds: Decimal) -> int:
        """Charges the actual seconds (never more than held); returns the charge."""
        await self._ensure_accounts(tenant_id)
        status, amount = await self._fast(Item("settle", tenant_id, job_id, seconds))
        if status == "settled":
            return int(amount or 0)
        if status == "unknown":
            raise UnknownReservation(f"no reservation for job {job_id}")
        if status == "released":
            raise ReservationClosed(f"reservation for {job_id} was released")
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_SETTLE_STATE, ledger.available(tenant_id), job_id, tenant_id)
            if row is None:
                raise UnknownReservation(f"no reservation for job {job_id}")
            self._same_tenant(row["tenant_id"], tenant_id)
            if row["state"] == "settled":
                return int(row["charged_micros"])
            if row["state"] == "released":
                raise ReservationClosed(f"reservation for {job_id} was released")
            held, held_free = int(row["held_micros"]), int(row["held_free_micros"])
            rate = Rate(row["model"], 0, row["micros_per_second"])
            charge = min(price_micros(rate, seconds), held)
            charge_free, _ = ledger.split_charge(charge, held_free)
            if held_free:
                await self._return_grants(conn, job_id, held_free - charge_free, everything=False)
            await conn.execute(
                "UPDATE reservations SET state = 'settled', charged_micros = $2, charged_free_micros = $3,"
                " settled_seconds = $4, closed_at = now() WHERE job_id = $1",
                job_id, charge, charge_free, seconds,
            )
            await self._post(conn, "settle", tenant_id, job_id, ledger.settle(tenant_id, held, charge, held_free))
            if row["monthly_budget_micros"] is not None:
                await budget.check(conn, tenant_id)
            return charge

    async def release(self, tenant_id: str, job_id: str) -> int:
        """Returns the hold (credit and free grants); returns what was released (0 if nothing was held)."""
        await self._ensure_accounts(tenant_id)
        status, amount = await self._fast(Item("release", tenant_id, job_id))
        if status in ("released", "none"):
            return int(amount or 0)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_tenant(conn, tenant_id)
            try:
                row = await self._locked_reservation(conn, tenant_id, job_id)
            except UnknownReservation:
                return 0
            if row["state"] != "held":
                return 0
            held, held_free = int(row["held_micros"]), int(row["held_free_micros"])
            await self._return_grants(conn, job_id, held_free, everything=True)
            await self._post(conn, "release", tenant_id, job_id, ledger.release(tenant_id, held, held_free))
            await conn.execute(
                "UPDATE reservations SET state = 'released', closed_at = now() WHERE job_id = $1", job_id
            )
            return held

    async def refund(self, tenant_id: str, job_id: str, refund_id: str, micros: int, reason: str) -> int:
        """Gives back part of a settled charge as new entries (paid part first); idempotent by refund_id.

        Returns the amount refunded by this refund id (the same on a repeated call).
        """
        if micros <= 0:
            raise RefundRefused("a refund must be positive")
        await self._ensure_accounts(tenant_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._lock_tenant(conn, tenant_id)
            done = await conn.fetchrow("SELECT tenant_id, micros FROM refunds WHERE refund_id = $1", refund_id)
            if done:
                self._same_tenant(done["tenant_id"], tenant_id)
                return int(done["micros"])
            row = await self._locked_reservation(conn, tenant_id, job_id)
            if row["state"] != "settled":
                raise RefundRefused(f"job {job_id} has no settled charge to refund")
            charged, refunded = int(row["charged_micros"]), int(row["refunded_micros"])
            if micros > charged - refunded:
                raise RefundRefused(f"refund of {micros} exceeds the {charged - refunded} still charged for {job_id}")
            paid_left = (charged - int(row["charged_free_micros"])) - refunded
            paid = min(micros, max(paid_left, 0))
            await conn.execute(
                "INSERT INTO refunds (refund_id, job_id, tenant_id, micros, reason) VALUES ($1, $2, $3, $4, $5)",
                refund_id, job_id, tenant_id, micros, reason[:500],
            )
            await conn.execute(
                "UPDATE reservations SET refunded_micros = refunded_micros + $2 WHERE job_id = $1", job_id, micros
            )
            await self._post(conn, "refund", tenant_id, job_id, ledger.refund(tenant_id, paid, micros - paid),
                             ref=refund_id)
            return micros

    async def balance(self, tenant_id: str) -> Balance:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, balance FROM accounts WHERE id = ANY($1::text[])",
                [ledger.available(tenant_id), ledger.reserved(tenant_id)],
            )
            spent = await conn.fetchval(
                "SELECT coalesce(sum(charged_micros - refunded_micros), 0) FROM reservations"
                " WHERE tenant_id = $1 AND state = 'settled'",
                tenant_id,
            )
            free = {
                r["unit"]: r["total"]
                for r in await conn.fetch(
                    "SELECT unit, sum(remaining) AS total FROM free_grants WHERE tenant_id = $1 AND remaining > 0"
                    " AND (expires_at IS NULL OR expires_at > now()) GROUP BY unit",
                    tenant_id,
                )
            }
            profile = await self.profile(tenant_id, conn)
        balances = {r["id"]: int(r["balance"]) for r in rows}
        return Balance(
            available=balances.get(ledger.available(tenant_id), 0),
            reserved=balances.get(ledger.reserved(tenant_id), 0),
            spent=int(spent),
            free_micros=int(free.get("micros", 0)),
            free_seconds=Decimal(free.get("seconds", 0)),
            credit_limit=profile.credit_limit if profile.mode == "postpaid" else 0,
            mode=profile.mode,
        )

    # -- helpers ------------------------------------------------------------------------------
    async def _fast(self, item: Item) -> tuple[str, int | None]:
        """One of the single-statement fast paths (migrations 0003, 0070): (status, amount)."""
        if self.group_commit is not None:
            return await self.group_commit.run(item)
        row = await self._pool.fetchrow(_FAST[item.kind], *_FAST_ARGS[item.kind](item))
        return row["status"], row["amount"]

    async def _use_grants(self, conn: asyncpg.Connection, job_id: str, funding: Funding) -> None:
        if not funding.allocations:
            return
        for allocation in funding.allocations:
            await conn.execute(
                "UPDATE free_grants SET remaining = remaining - $2 WHERE id = $1", allocation.grant_id, allocation.used
            )
        await conn.executemany(
            "INSERT INTO grant_allocations (job_id, grant_id, used, micros) VALUES ($1, $2, $3, $4)",
            [(job_id, a.grant_id, a.used, a.micros) for a in funding.allocations],
        )

    async def _return_grants(self, conn: asyncpg.Connection, job_id: str, unused_free: int, everything: bool) -> None:
        rows = await conn.fetch(
            "SELECT a.grant_id, g.unit, a.used, a.micros"
            " FROM grant_allocations a JOIN free_grants g ON g.id = a.grant_id WHERE a.job_id = $1 ORDER BY a.grant_id",
            job_id,
        )
        allocations = [Allocation(r["grant_id"], r["unit"], r["used"], int(r["micros"])) for r in rows]
        back = [(a.grant_id, a.used) for a in allocations] if everything else give_back(allocations, unused_free)
        for grant_id, amount in back:
            await conn.execute("UPDATE free_grants SET remaining = remaining + $2 WHERE id = $1", grant_id, amount)

    @staticmethod
    async def _lock_tenant(conn: asyncpg.Connection, tenant_id: str) -> None:
        await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", ledger.available(tenant_id))

    async def _locked_reservation(self, conn: asyncpg.Connection, tenant_id: str, job_id: str) -> asyncpg.Record:
        row = await conn.fetchrow("SELECT * FROM reservations WHERE job_id = $1 FOR UPDATE", job_id)
        if row is None:
            raise UnknownReservation(f"no reservation for job {job_id}")
        self._same_tenant(row["tenant_id"], tenant_id)
        return row

    @staticmethod
    def _same_tenant(owner: str, caller: str) -> None:
        if owner != caller:
            raise UnknownReservation("no reservation for this job and tenant")

    async def _ensure_accounts(self, tenant_id: str) -> None:
        """Creates the tenant's (and platform) accounts, committed before any operation's transaction: an
        insert racing another transaction's uncommitted insert of the same row would wait on it outside
        the lock order, which can deadlock."""
        if tenant_id in self._tenants_with_accounts:
            return
        await self._pool.executemany(
            "INSERT INTO accounts (id, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(ledger.available(tenant_id), tenant_id), (ledger.reserved(tenant_id), tenant_id),
             (ledger.REVENUE, None), (ledger.GRANTS, None), (ledger.PROMOTIONS, None), (ledger.FREE_USAGE, None)],
        )
        self._tenants_with_accounts.add(tenant_id)

    async def _post(
        self, conn: asyncpg.Connection, kind: str, tenant_id: str, job_id: str | None,
        postings: list[ledger.Posting], ref: str | None = None,
    ) -> None:
        """Writes the transaction and its entries, then the tenant's cached balances (its accounts are
        locked by the operation already). Platform accounts keep no cached balance: every operation
        of every tenant would otherwise queue on the same rows (their balance is the sum of entries)."""
        await conn.execute(
            _POST, kind, tenant_id, job_id, ref, [p.account for p in postings], [p.amount for p in postings]
        )
        cached = [p for p in postings if ledger.is_cached(p.account)]
        if cached:
            await conn.execute(_UPDATE_CACHED, [p.account for p in cached], [p.amount for p in cached])
