"""Where `gateway.limits` are counted: in Redis (every edge that names it shares the counts), in
PostgreSQL when that is the session store and no Redis is named, or in one edge's process.

Two kinds of count: amounts added up per window (requests, tokens, micro-USD; a window is a
UTC minute, day or month) and places among concurrent turns (each held under a lease, so that
an edge that died mid-turn cannot hold one for ever). A request makes two calls of its store,
each one atomic step (a Lua script, one PostgreSQL transaction): `take` when it starts (count
it, read its budgets, take its places) and `give_back` when it ends (charge what it spent, give
its places back). The stores: LocalCounts here, RedisCounts (redis_counts.py), PostgresCounts
(postgres_counts.py); limit_stores.py picks one.
"""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

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
