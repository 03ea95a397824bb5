"""Where `gateway.limits` are counted: in Redis (every edge that names it shares the counts), in
PostgreSQL when that is the session store and no Redis is named, or in one edge's process.

Two kinds of count: amounts added up per window (requests, tokens, micro-USD; a window is a
UTC minute, day or month) and places among concurrent turns (each held under a lease, so that
an edge that died mid-turn cannot hold one for ever). Every operation is one atomic step of the
store (a Redis pipeline or Lua script, one PostgreSQL transaction), never an edge's own
read-modify-write.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from services.config import POSTGRES_URL_PREFIXES

Period = Literal["minute", "day", "month"]
# A turn holds its place among an identity's concurrent turns at most this long.
TURN_LEASE_SECONDS = 30 * 60
_SECONDS: dict[str, int] = {"minute": 60, "day": 86_400}


def window(period: Period, now: float) -> tuple[str, float]:
    """The current window of `period` (UTC): its label, and the seconds until it ends."""
    if period == "month":
        today = datetime.datetime.fromtimestamp(now, datetime.UTC)
        year, month = divmod(today.year * 12 + today.month, 12)  # the next month, 0-based
        following = datetime.datetime(year, month + 1, 1, tzinfo=datetime.UTC)
        return f"{today.year}-{today.month:02}", following.timestamp() - now
    seconds = _SECONDS[period]
    number = int(now // seconds)
    return str(number), (number + 1) * seconds - now


# (key, period, amount): add `amount` to `key`'s current window of `period`.
Addition = tuple[str, Period, int]


class LimitStoreDown(Exception):
    """The limit store did not answer."""


class Counts(Protocol):
    async def add(self, additions: Sequence[Addition]) -> list[int]:
        """Adds each amount to its window (0 reads it), together: the totals after adding."""

    async def enter(self, key: str, limit: int) -> str | None:
        """Takes one of `limit` places under `key`; its token, or None when all are taken."""

    async def leave(self, key: str, token: str) -> None:
        """Gives a place back."""

    async def close(self) -> None:
        """Lets go of the store."""


class LocalCounts:
    """Counts in this process: one edge's own limits."""

    def __init__(self) -> None:
        # (key, period): the current window's label and total; an older window is forgotten.
        self._windows: dict[tuple[str, Period], tuple[str, int]] = {}
        self._places: dict[str, set[str]] = {}

    async def add(self, additions: Sequence[Addition]) -> list[int]:
        now = time.time()
        totals = []
        for key, period, amount in additions:
            label, _ = window(period, now)
            known, total = self._windows.get((key, period), (label, 0))
            total = total + amount if known == label else amount
            self._windows[key, period] = (label, total)
            totals.append(total)
        return totals

    async def enter(self, key: str, limit: int) -> str | None:
        places = self._places.setdefault(key, set())
        if len(places) >= limit:
            return None
        token = uuid.uuid4().hex
        places.add(token)
        return token

    async def leave(self, key: str, token: str) -> None:
        self._places.get(key, set()).discard(token)

    async def close(self) -> None:
        return None


# A place among concurrent turns is a member of a sorted set scored by its lease's end; places
# whose lease ended are dropped before counting, all in one atomic step.
_ENTER = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisCounts:
    """Counts in Redis, shared by every edge that names the same store."""

    def __init__(self, url: str) -> None:
        # Imported only when a store is configured.
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        self._redis: Any = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._enter = self._redis.register_script(_ENTER)
        self._failures = (RedisError, OSError)

    async def _call(self, work: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await work()
        except self._failures as error:
            raise LimitStoreDown(str(error) or type(error).__name__) from None

    async def add(self, additions: Sequence[Addition]) -> list[int]:
        now = time.time()

        async def count() -> Any:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, period, amount in additions:
                    label, left = window(period, now)
                    counted = f"clawgate:limit:{key}:{label}"
                    pipe.incrby(counted, amount)
                    pipe.expire(counted, int(left) + 60)
                return await pipe.execute()

        replies = await self._call(count)
        return [int(total) for total in replies[::2]]

    async def enter(self, key: str, limit: int) -> str | None:
        now = time.time()
        token = uuid.uuid4().hex
        arguments: list[float | int | str] = [
            now,
            now + TURN_LEASE_SECONDS,
            limit,
            token,
            TURN_LEASE_SECONDS,
        ]

        async def take() -> Any:
            return await self._enter(keys=[f"clawgate:limit:{key}"], args=arguments)

        return token if await self._call(take) else None

    async def leave(self, key: str, token: str) -> None:
        await self._call(lambda: self._redis.zrem(f"clawgate:limit:{key}", token))

    async def close(self) -> None:
        await self._redis.aclose()


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

    async def _call(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        import asyncpg  # only when PostgreSQL counts

        try:
            pool = self._pool or await self._opened()
            async with pool.acquire() as connection:
                return await work(connection)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            raise LimitStoreDown(str(error) or type(error).__name__) from None

    async def add(self, additions: Sequence[Addition]) -> list[int]:
        now = time.time()
        windows = [window(period, now) for _, period, _ in additions]
        columns = (
            [key for key, _, _ in additions],
            [label for label, _ in windows],
            [amount for _, _, amount in additions],
            [now + left + 60 for _, left in windows],
        )
        sweep = now - self._swept > SWEEP_SECONDS
        if sweep:
            self._swept = now

        async def count(connection: Any) -> Any:
            if sweep:
                await connection.execute(
                    "DELETE FROM clawgate_limit_counts WHERE expires_at < $1", now
                )
            return await connection.fetch(_POSTGRES_ADD, *columns)

        rows = await self._call(count)
        totals = {(row["key"], row["label"]): row["total"] for row in rows}
        return [totals[key, label] for key, (label, _) in zip(columns[0], windows, strict=True)]

    async def enter(self, key: str, limit: int) -> str | None:
        now = time.time()
        token = uuid.uuid4().hex

        async def take(connection: Any) -> bool:
            async with connection.transaction():
                # One key's places are counted and taken by one edge at a time.
                await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
                await connection.execute(
                    "DELETE FROM clawgate_limit_places WHERE key = $1 AND lease_end < $2", key, now
                )
                taken = await connection.fetchval(
                    "SELECT count(*) FROM clawgate_limit_places WHERE key = $1", key
                )
                if taken >= limit:
                    return False
                await connection.execute(
                    "INSERT INTO clawgate_limit_places VALUES ($1, $2, $3)",
                    key,
                    token,
                    now + TURN_LEASE_SECONDS,
                )
                return True

        return token if await self._call(take) else None

    async def leave(self, key: str, token: str) -> None:
        async def give_back(connection: Any) -> None:
            await connection.execute(
                "DELETE FROM clawgate_limit_places WHERE key = $1 AND token = $2", key, token
            )

        await self._call(give_back)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def counts_for(store: str | None, sessions_store: str) -> Counts:
    """`gateway.limits.store`'s Redis; unset, the session store's PostgreSQL, else this edge."""
    if store is not None:
        return RedisCounts(store)
    if sessions_store.startswith(POSTGRES_URL_PREFIXES):
        return PostgresCounts(sessions_store)
    return LocalCounts()
