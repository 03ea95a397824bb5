"""`gateway.limits` counted in the session store's PostgreSQL, when no Redis is named: every edge
on it shares the counts. Each of a request's two calls is one transaction; a key's places are
counted and taken under an advisory lock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway_edge.limit_counts import TURN_LEASE_SECONDS, Count, LimitStoreDown, Taken, window

# Made by whichever edge starts first; the advisory lock keeps two from racing on it.
_POSTGRES_TABLES = """
SELECT pg_advisory_xact_lock(7245001);
CREATE TABLE IF NOT EXISTS clawgate_limit_counts (
    key TEXT NOT NULL, label TEXT NOT NULL, total BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (key, label));
CREATE TABLE IF NOT EXISTS clawgate_limit_places (
    key TEXT NOT NULL, token TEXT NOT NULL, lease_end DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, token));
"""
_POSTGRES_ADD = """
INSERT INTO clawgate_limit_counts AS counted (key, label, total, expires_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::double precision[])
ON CONFLICT (key, label) DO UPDATE SET total = counted.total + excluded.total
RETURNING key, label, total
"""
# Windows that ended are swept at most this often, by whichever edge adds next.
SWEEP_SECONDS = 300


class PostgresCounts:
    """Counts in the session store's PostgreSQL (asyncpg), shared by every edge on it."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: Any = None
        self._opening = asyncio.Lock()
        self._swept = 0.0

    async def _opened(self) -> Any:
        async with self._opening:
            if self._pool is None:
                import asyncpg

                pool = await asyncpg.create_pool(
                    self._url, min_size=1, max_size=4, timeout=2, command_timeout=2
                )
                async with pool.acquire() as connection, connection.transaction():
                    await connection.execute(_POSTGRES_TABLES)
                self._pool = pool
        return self._pool

    async def _in_transaction(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        import asyncpg  # only when PostgreSQL counts

        try:
            pool = self._pool or await self._opened()
            async with pool.acquire() as connection, connection.transaction():
                return await work(connection)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            raise LimitStoreDown(str(error) or type(error).__name__) from None

    async def _add(self, connection: Any, counts: Sequence[Count], now: float) -> list[int]:
        if not counts:
            return []
        if now - self._swept > SWEEP_SECONDS:
            self._swept = now
            await connection.execute("DELETE FROM clawgate_limit_counts WHERE expires_at < $1", now)
        windows = [window(count.period, now) for count in counts]
        rows = await connection.fetch(
            _POSTGRES_ADD,
            [count.key for count in counts],
            [label for label, _ in windows],
            [count.amount for count in counts],
            [now + left + 60 for _, left in windows],
        )
        totals = {(row["key"], row["label"]): row["total"] for row in rows}
        return [totals[count.key, label] for count, (label, _) in zip(counts, windows, strict=True)]

    async def take(
        self, counts: Sequence[Count], places: Sequence[tuple[str, int]], token: str
    ) -> Taken:
        now = time.time()

        async def work(connection: Any) -> Taken:
            totals = await self._add(connection, counts, now)
            if any(total > count.ceiling for total, count in zip(totals, counts, strict=True)):
                return Taken(totals, over=True, full=None)
            async with connection.transaction():  # a savepoint: the places, all or none
                for index, (key, limit) in enumerate(places):
                    # One key's places are counted and taken by one edge at a time.
                    await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
                    await connection.execute(
                        "DELETE FROM clawgate_limit_places WHERE key = $1 AND lease_end < $2",
                        key,
                        now,
                    )
                    taken = await connection.fetchval(
                        "SELECT count(*) FROM clawgate_limit_places WHERE key = $1", key
                    )
                    if taken >= limit:
                        raise _Full(Taken(totals, over=False, full=index))
                    await connection.execute(
                        "INSERT INTO clawgate_limit_places VALUES ($1, $2, $3)",
                        key,
                        token,
                        now + TURN_LEASE_SECONDS,
                    )
            return Taken(totals, over=False, full=None)

        async def counted_even_when_full(connection: Any) -> Taken:
            try:
                return await work(connection)
            except _Full as full:
                return full.taken

        result: Taken = await self._in_transaction(counted_even_when_full)
        return result

    async def give_back(self, charges: Sequence[Count], places: Sequence[str], token: str) -> None:
        async def work(connection: Any) -> None:
            await self._add(connection, charges, time.time())
            if places:
                await connection.execute(
                    "DELETE FROM clawgate_limit_places WHERE key = ANY($1::text[]) AND token = $2",
                    list(places),
                    token,
                )

        await self._in_transaction(work)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class _Full(Exception):
    """A place set was full: its savepoint rolls the places back, the counts stay."""

    def __init__(self, taken: Taken) -> None:
        self.taken = taken
