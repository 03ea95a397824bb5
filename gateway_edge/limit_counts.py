"""Where `gateway.limits` are counted: in Redis (every edge that names it shares the counts), in
PostgreSQL when that is the session store and no Redis is named, or in one edge's process.

Two kinds of count: amounts added up per window (requests, tokens, micro-USD; a window is a
UTC minute, day or month) and places among concurrent turns (each held under a lease, so that
an edge that died mid-turn cannot hold one for ever). A request makes two calls of its store,
each one atomic step (a Lua script, one PostgreSQL transaction): `take` when it starts (count
it, read its budgets, take its places) and `give_back` when it ends (charge what it spent, give
its places back).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway_edge.redis_link import RedisError, RedisLink
from services.config import POSTGRES_URL_PREFIXES

Period = Literal["minute", "day", "month"]
# A turn holds its place among an identity's concurrent turns at most this long.
TURN_LEASE_SECONDS = 30 * 60
_SECONDS: dict[str, int] = {"minute": 60, "day": 86_400}
NO_CEILING = 2**62


def window(period: Period, now: float) -> tuple[str, float]:
    """The current window of `period` (UTC): its label, and the seconds until it ends."""
    label, end = _window_of(period, int(now))
    return label, end - now


@functools.lru_cache(maxsize=8)  # every request asks: worked out once a second per period
def _window_of(period: Period, second: int) -> tuple[str, float]:
    """The window of `period` holding the UTC second `second`: its label and its end."""
    if period == "month":
        today = datetime.datetime.fromtimestamp(second, datetime.UTC)
        year, month = divmod(today.year * 12 + today.month, 12)  # the next month, 0-based
        following = datetime.datetime(year, month + 1, 1, tzinfo=datetime.UTC)
        return f"{today.year}-{today.month:02}", following.timestamp()
    seconds = _SECONDS[period]
    number = second // seconds
    return str(number), (number + 1) * seconds


@dataclass(frozen=True, slots=True)
class Count:
    """`amount` added to `key`'s current window of `period` (0 reads it); a total above
    `ceiling` refuses the request."""

    key: str
    period: Period
    amount: int
    ceiling: int = NO_CEILING


@dataclass(frozen=True, slots=True)
class Taken:
    totals: list[int]  # each count's total, its amount included
    over: bool  # a total passed its ceiling: no place was taken
    full: int | None  # the place that was full (none taken); None: all were taken


class LimitStoreDown(Exception):
    """The limit store did not answer."""


class Counts(Protocol):
    async def take(
        self, counts: Sequence[Count], places: Sequence[tuple[str, int]], token: str
    ) -> Taken:
        """Adds `counts`; unless one passed its ceiling, takes a place under each key of
        `places` (key, how many at most) for `token`, all or none."""

    async def give_back(self, charges: Sequence[Count], places: Sequence[str], token: str) -> None:
        """Adds `charges` and gives `token`'s places back."""

    async def close(self) -> None:
        """Lets go of the store."""


class LocalCounts:
    """Counts in this process: one edge's own limits."""

    def __init__(self) -> None:
        # (key, period): the current window's label and total; an older window is forgotten.
        self._windows: dict[tuple[str, Period], tuple[str, int]] = {}
        self._places: dict[str, set[str]] = {}

    def _add(self, counts: Sequence[Count], now: float) -> list[int]:
        totals = []
        for count in counts:
            label, _ = window(count.period, now)
            known, total = self._windows.get((count.key, count.period), (label, 0))
            total = total + count.amount if known == label else count.amount
            self._windows[count.key, count.period] = (label, total)
            totals.append(total)
        return totals

    async def take(
        self, counts: Sequence[Count], places: Sequence[tuple[str, int]], token: str
    ) -> Taken:
        totals = self._add(counts, time.time())
        if any(total > count.ceiling for total, count in zip(totals, counts, strict=True)):
            return Taken(totals, over=True, full=None)
        for index, (key, limit) in enumerate(places):
            if len(self._places.get(key, ())) >= limit:
                return Taken(totals, over=False, full=index)
        for key, _ in places:
            self._places.setdefault(key, set()).add(token)
        return Taken(totals, over=False, full=None)

    async def give_back(self, charges: Sequence[Count], places: Sequence[str], token: str) -> None:
        self._add(charges, time.time())
        for key in places:
            self._places.get(key, set()).discard(token)

    async def close(self) -> None:
        return None


# KEYS: the counted windows, then the place sets. ARGV: how many windows, now, the lease's end,
# the token, the lease in seconds; (amount, seconds to keep, ceiling) per window; the most
# places per set. Returns each window's total, then -1 (over a ceiling), 0 (places taken) or
# the number of the set that was full.
_TAKE = """
local windows = tonumber(ARGV[1])
local totals = {}
local over = false
for i = 1, windows do
  local at = 5 + (i - 1) * 3
  local total = redis.call('INCRBY', KEYS[i], ARGV[at + 1])
  if total == tonumber(ARGV[at + 1]) then redis.call('EXPIRE', KEYS[i], ARGV[at + 2]) end
  totals[i] = total
  if total > tonumber(ARGV[at + 3]) then over = true end
end
local outcome = 0
if over then
  outcome = -1
else
  for j = windows + 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', ARGV[2])
    if redis.call('ZCARD', KEYS[j]) >= tonumber(ARGV[5 + windows * 3 + j - windows]) then
      for k = windows + 1, j - 1 do redis.call('ZREM', KEYS[k], ARGV[4]) end
      outcome = j - windows
      break
    end
    redis.call('ZADD', KEYS[j], ARGV[3], ARGV[4])
    redis.call('EXPIRE', KEYS[j], ARGV[5])
  end
end
totals[windows + 1] = outcome
return totals
"""
# KEYS: the charged windows, then the place sets. ARGV: how many windows, the token; (amount,
# seconds to keep) per window.
_GIVE_BACK = """
local windows = tonumber(ARGV[1])
for i = 1, windows do
  local total = redis.call('INCRBY', KEYS[i], ARGV[1 + i * 2])
  if total == tonumber(ARGV[1 + i * 2]) then redis.call('EXPIRE', KEYS[i], ARGV[2 + i * 2]) end
end
for j = windows + 1, #KEYS do redis.call('ZREM', KEYS[j], ARGV[2]) end
return 0
"""


class RedisCounts:
    """Counts in Redis, shared by every edge that names the same store."""

    def __init__(self, url: str) -> None:
        self._link = RedisLink(url)

    async def _run(self, script: str, keys: list[str], arguments: list[Any]) -> Any:
        try:
            return await self._link.run_script(script, keys, arguments)
        except RedisError as error:
            raise LimitStoreDown(str(error)) from None

    @staticmethod
    def _windows(counts: Sequence[Count], now: float) -> tuple[list[str], list[list[Any]]]:
        keys, arguments = [], []
        for count in counts:
            label, left = window(count.period, now)
            keys.append(f"clawgate:limit:{count.key}:{label}")
            arguments.append([count.amount, int(left) + 60, count.ceiling])
        return keys, arguments

    async def take(
        self, counts: Sequence[Count], places: Sequence[tuple[str, int]], token: str
    ) -> Taken:
        now = time.time()
        keys, per_window = self._windows(counts, now)
        arguments: list[Any] = [len(counts), now, now + TURN_LEASE_SECONDS, token]
        arguments.append(TURN_LEASE_SECONDS)
        for amount_keep_ceiling in per_window:
            arguments += amount_keep_ceiling
        keys += [f"clawgate:limit:{key}" for key, _ in places]
        arguments += [limit for _, limit in places]
        *totals, outcome = await self._run(_TAKE, keys, arguments)
        return Taken(totals, over=outcome == -1, full=outcome - 1 if outcome > 0 else None)

    async def give_back(self, charges: Sequence[Count], places: Sequence[str], token: str) -> None:
        keys, per_window = self._windows(charges, time.time())
        arguments: list[Any] = [len(charges), token]
        for amount, keep, _ in per_window:
            arguments += [amount, keep]
        keys += [f"clawgate:limit:{key}" for key in places]
        await self._run(_GIVE_BACK, keys, arguments)

    async def close(self) -> None:
        await self._link.close()


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


def counts_for(store: str | None, sessions_store: str) -> Counts:
    """`gateway.limits.store`'s Redis; unset, the session store's PostgreSQL, else this edge."""
    if store is not None:
        return RedisCounts(store)
    if sessions_store.startswith(POSTGRES_URL_PREFIXES):
        return PostgresCounts(sessions_store)
    return LocalCounts()
