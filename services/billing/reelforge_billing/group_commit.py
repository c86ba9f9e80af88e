"""Group commit for the fast paths: concurrent Reserve/Settle/Release calls share one statement and one commit.

A durable commit waits for the WAL to reach the disk, and each statement is a round trip and a
PostgreSQL backend's work; one statement (`fast_batch`, migration 0070) running every pending call
pays those once for all of them. No call waits for a timer: a batch starts as soon as fewer than
`max_in_flight` batches are running, with everything that arrived meanwhile, so batches grow only
when the database is busy.

Each call keeps its own semantics. Items run one after another inside the transaction, so a
duplicate job id within a batch sees the first one's reservation and a tenant's balance is checked
against every earlier hold. An item that cannot proceed (insufficient credit, no rate, unknown job)
answers with its status and writes nothing, so it never fails its neighbours. If the statement as a
whole fails (a value PostgreSQL refuses, a lost connection), nothing of it was committed, and every
item runs again alone, each in its own transaction, so only the bad item fails; the fast paths are
idempotent by job id, so a batch that committed before its connection broke is not applied twice.
A call's future is resolved only after the commit, so nothing is acknowledged that a crash can lose.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import asyncpg

Kind = Literal["reserve", "settle", "release"]
Result = tuple[str, int | None]

_BATCH = "SELECT item, status, amount FROM fast_batch($1, $2, $3, $4, $5, $6, $7)"


@dataclass(frozen=True)
class Item:
    kind: Kind
    tenant_id: str
    job_id: str
    seconds: Decimal = Decimal(0)
    model: str = ""
    width: int = 0
    height: int = 0


@dataclass
class Stats:
    batches: int = 0
    items: int = 0
    largest: int = 0
    fallbacks: int = 0  # batches that failed as a whole and ran item by item
    sizes: list[int] = field(default_factory=list)  # the last few batch sizes (tests and benchmarks)


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool, max_batch: int = 256, max_in_flight: int = 2) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = Stats()

    async def run(self, item: Item) -> Result:
        """The item's (status, amount), once the transaction that wrote it has committed."""
        if "\x00" in item.tenant_id or "\x00" in item.job_id or "\x00" in item.model:
            # PostgreSQL text cannot hold NUL: this one would fail its whole batch, so it fails alone.
            return await self._alone(item)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        if self._scheduled or not self._pending or self._in_flight >= self._max_in_flight:
            return
        self._scheduled = True
        # Calls whose handlers are already runnable in this turn of the event loop join this batch.
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if not self._pending or self._in_flight >= self._max_in_flight:
            return
        batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
        self._in_flight += 1
        task = asyncio.create_task(self._flush(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            # The same lock order in every batch (tenants by id; a tenant's items in arrival order).
            batch.sort(key=lambda entry: entry[0].tenant_id)
            items = [item for item, _ in batch]
            self._count(len(items))
            try:
                results: list[Result | BaseException] = list(await self._execute(items))
            except Exception:  # whatever broke the batch, each item gets its own answer alone
                self.stats.fallbacks += 1
                results = list(await asyncio.gather(*(self._alone(item) for item in items), return_exceptions=True))
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller went away (deadline, cancel); its item stands
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except BaseException as exc:  # never leave a caller waiting forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        finally:
            self._in_flight -= 1
            self._kick()

    def _count(self, size: int) -> None:
        self.stats.batches += 1
        self.stats.items += size
        self.stats.largest = max(self.stats.largest, size)
        self.stats.sizes = [*self.stats.sizes[-99:], size]

    async def _execute(self, items: list[Item]) -> list[Result]:
        rows = await self._pool.fetch(_BATCH, *_columns(items))
        return [(row["status"], row["amount"]) for row in rows]

    async def _alone(self, item: Item) -> Result:
        row = await self._pool.fetchrow(_BATCH, *_columns([item]))
        return row["status"], row["amount"]


def _columns(items: list[Item]) -> tuple[list[str], list[str], list[str], list[str], list[int], list[int],
                                         list[Decimal]]:
    return (
        [i.kind for i in items], [i.tenant_id for i in items], [i.job_id for i in items],
        [i.model for i in items], [i.width for i in items], [i.height for i in items], [i.seconds for i in items],
    )
