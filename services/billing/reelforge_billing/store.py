"""The ledger in Postgres: each operation is one transaction, idempotent by job id."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from reelforge_billing import ledger
from reelforge_billing.pricing import Rate, pick_rate, price_micros


class InsufficientCredit(Exception):
    pass


class UnknownReservation(Exception):
    pass


class ReservationClosed(Exception):
    pass


@dataclass(frozen=True)
class Balance:
    available: int
    reserved: int
    spent: int


class LedgerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def grant(self, tenant_id: str, amount: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._post(conn, "grant", tenant_id, None, ledger.grant(tenant_id, amount))

    async def reserve(
        self, tenant_id: str, job_id: str, model: str, width: int, height: int, seconds: Decimal
    ) -> int:
        """Holds the job's price; returns the held amount (the same one on a repeated call)."""
        async with self._pool.acquire() as conn, conn.transaction():
            existing = await conn.fetchrow("SELECT tenant_id, held_micros FROM reservations WHERE job_id = $1", job_id)
            if existing:
                self._same_tenant(existing["tenant_id"], tenant_id)
                return int(existing["held_micros"])
            rates = [Rate(r["model"], r["max_pixels"], r["micros_per_second"])
                     for r in await conn.fetch("SELECT * FROM rate_cards WHERE model = $1", model)]
            rate = pick_rate(rates, model, width, height)
            amount = price_micros(rate, seconds)
            await self._ensure_accounts(conn, tenant_id)
            available = await conn.fetchval(
                "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE", ledger.available(tenant_id)
            )
            if available < amount:
                raise InsufficientCredit(f"job needs {amount} micros, tenant has {available} available")
            inserted = await conn.fetchval(
                "INSERT INTO reservations (job_id, tenant_id, model, width, height, seconds, micros_per_second,"
                " held_micros, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'held')"
                " ON CONFLICT (job_id) DO NOTHING RETURNING true",
                job_id, tenant_id, model, width, height, seconds, rate.micros_per_second, amount,
            )
            if not inserted:  # a concurrent duplicate won the race; its hold stands
                return int(await conn.fetchval("SELECT held_micros FROM reservations WHERE job_id = $1", job_id))
            await self._post(conn, "reserve", tenant_id, job_id, ledger.reserve(tenant_id, amount))
            return amount

    async def settle(self, tenant_id: str, job_id: str, seconds: Decimal) -> int:
        """Charges the actual seconds (never more than held); returns the charge."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._locked_reservation(conn, tenant_id, job_id)
            if row["state"] == "settled":
                return int(row["charged_micros"])
            if row["state"] == "released":
                raise ReservationClosed(f"reservation for {job_id} was released")
            rate = Rate(row["model"], 0, row["micros_per_second"])
            charge = min(price_micros(rate, seconds), int(row["held_micros"]))
            await self._post(conn, "settle", tenant_id, job_id, ledger.settle(tenant_id, row["held_micros"], charge))
            await conn.execute(
                "UPDATE reservations SET state = 'settled', charged_micros = $2, closed_at = now() WHERE job_id = $1",
                job_id, charge,
            )
            return charge

    async def release(self, tenant_id: str, job_id: str) -> int:
        """Returns the hold to the tenant; returns what was released (0 if nothing was held)."""
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await self._locked_reservation(conn, tenant_id, job_id)
            except UnknownReservation:
                return 0
            if row["state"] != "held":
                return 0
            await self._post(conn, "release", tenant_id, job_id, ledger.release(tenant_id, row["held_micros"]))
            await conn.execute(
                "UPDATE reservations SET state = 'released', closed_at = now() WHERE job_id = $1", job_id
            )
            return int(row["held_micros"])

    async def balance(self, tenant_id: str) -> Balance:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, balance FROM accounts WHERE id = ANY($1::text[])",
                [ledger.available(tenant_id), ledger.reserved(tenant_id)],
            )
            spent = await conn.fetchval(
                "SELECT coalesce(sum(charged_micros), 0) FROM reservations WHERE tenant_id = $1 AND state = 'settled'",
                tenant_id,
            )
        balances = {r["id"]: int(r["balance"]) for r in rows}
        return Balance(
            available=balances.get(ledger.available(tenant_id), 0),
            reserved=balances.get(ledger.reserved(tenant_id), 0),
            spent=int(spent),
        )

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

    @staticmethod
    async def _ensure_accounts(conn: asyncpg.Connection, tenant_id: str) -> None:
        await conn.executemany(
            "INSERT INTO accounts (id, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(ledger.available(tenant_id), tenant_id), (ledger.reserved(tenant_id), tenant_id),
             (ledger.REVENUE, None), (ledger.GRANTS, None)],
        )

    async def _post(
        self, conn: asyncpg.Connection, kind: str, tenant_id: str, job_id: str | None,
        postings: list[ledger.Posting],
    ) -> None:
        await self._ensure_accounts(conn, tenant_id)
        txn = await conn.fetchval(
            "INSERT INTO ledger_transactions (kind, tenant_id, job_id) VALUES ($1, $2, $3) RETURNING id",
            kind, tenant_id, job_id,
        )
        # Lock accounts in a fixed order so concurrent postings cannot deadlock.
        for posting in sorted(postings, key=lambda p: p.account):
            await conn.execute(
                "INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES ($1, $2, $3)",
                txn, posting.account, posting.amount,
            )
            await conn.execute(
                "UPDATE accounts SET balance = balance + $2 WHERE id = $1", posting.account, posting.amount
            )
