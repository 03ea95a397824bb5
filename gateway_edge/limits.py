"""Limits on turns per identity and per agent (`gateway.limits`): requests per minute and
turns at once. Counted in Redis when `store` names one, so that every edge of a deployment
shares the counts (atomic INCR and Lua, no edge's own arithmetic), else in this process.

A limit store that does not answer is `onStoreDown`'s choice: "open" admits the turn, logs a
warning and counts the failure (`clawgate_edge_limit_store_failures_total`); "closed" refuses
it with 503.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway_edge.errors import ApiError
from services.limits_config import LimitsConfig, LimitSet

log = logging.getLogger("clawgate.edge.limits")
MINUTE = 60
# A turn holds its place among an identity's concurrent turns at most this long: an edge that
# died mid-turn cannot hold it for ever.
TURN_LEASE_SECONDS = 30 * 60
RequestHeaders = list[tuple[bytes, bytes]]


class LimitStoreDown(Exception):
    """The limit store did not answer."""


class Counts(Protocol):
    async def hit(self, key: str, window_seconds: int) -> tuple[int, float]:
        """Counts one request in the current window of `key`: the count so far, this one
        included, and the seconds until the window ends."""

    async def enter(self, key: str, limit: int) -> str | None:
        """Takes one of `limit` places under `key`; its token, or None when all are taken."""

    async def leave(self, key: str, token: str) -> None:
        """Gives a place back."""

    async def close(self) -> None:
        """Lets go of the store."""


class LocalCounts:
    """Counts in this process: one edge's own limits."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}  # key: (window number, count)
        self._places: dict[str, set[str]] = {}

    async def hit(self, key: str, window_seconds: int) -> tuple[int, float]:
        now = time.time()
        window = int(now // window_seconds)
        known, count = self._windows.get(key, (window, 0))
        count = count + 1 if known == window else 1
        self._windows[key] = (window, count)
        return count, (window + 1) * window_seconds - now

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

    async def hit(self, key: str, window_seconds: int) -> tuple[int, float]:
        now = time.time()
        window = int(now // window_seconds)
        counted = f"clawgate:limit:{key}:{window}"

        async def count() -> Any:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(counted)
                pipe.expire(counted, window_seconds + 1)
                return await pipe.execute()

        count_now, _ = await self._call(count)
        return int(count_now), (window + 1) * window_seconds - now

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


def rate_limited(message: str, retry_after: float, headers: RequestHeaders) -> ApiError:
    error = ApiError(429, message, "rate_limit_error", code="rate_limit_exceeded")
    error.headers.update((name.decode(), value.decode()) for name, value in headers)
    error.headers["retry-after"] = str(max(math.ceil(retry_after), 1))
    return error


@dataclass
class Admission:
    """A turn let in: the headers its answer carries, and its places to give back."""

    headers: RequestHeaders = field(default_factory=list)
    places: list[tuple[str, str]] = field(default_factory=list)  # (key, token) to give back
    counts: Counts | None = None  # where the places are held; None once given back

    async def release(self) -> None:
        counts, self.counts = self.counts, None
        if counts is None:
            return
        for key, token in self.places:
            try:
                await counts.leave(key, token)
            except LimitStoreDown as down:
                log.warning("limit store: a place was not given back (%s); its lease ends it", down)


NO_LIMITS = Admission()
_UNLIMITED = LimitSet()


class Limits:
    def __init__(
        self, config: LimitsConfig, counts: Counts, on_failure: Callable[[], None]
    ) -> None:
        self._config = config
        self._counts = counts
        self._on_failure = on_failure
        # Each named identity's limits over the default, worked out once.
        self._identities = {
            who: limits.over(config.default) for who, limits in config.identities.items()
        }
        self.active = bool(
            config.identities or config.agents or config.default.model_dump(exclude_none=True)
        )

    def _of(self, identity: str, agent: str) -> tuple[LimitSet, LimitSet]:
        mine = self._identities.get(identity, self._config.default)
        return mine, self._config.agents.get(agent, _UNLIMITED)

    async def close(self) -> None:
        await self._counts.close()

    async def admit(self, identity: str, agent: str) -> Admission:
        """Lets a turn of `identity` on `agent` in, or raises ApiError (429, or 503 when the
        store is down and onStoreDown is "closed")."""
        if not self.active:
            return NO_LIMITS
        try:
            return await self._admit(identity, agent)
        except LimitStoreDown as down:
            self._on_failure()
            if self._config.on_store_down == "closed":
                raise ApiError(
                    503,
                    "The limit store does not answer; try again shortly.",
                    "api_error",
                    code="limits_unavailable",
                    headers={"retry-after": "1"},
                ) from None
            log.warning("limit store down (%s): the turn goes on unlimited (onStoreDown)", down)
            return NO_LIMITS

    async def _admit(self, identity: str, agent: str) -> Admission:
        mine, agents = self._of(identity, agent)
        admission = Admission(counts=self._counts)
        for scope, who, limit in (("identity", identity, mine), ("agent", agent, agents)):
            per_minute = limit.requests_per_minute
            if per_minute is None:
                continue
            count, reset = await self._counts.hit(f"rpm:{scope}:{who}", MINUTE)
            if scope == "identity":
                admission.headers = _rate_headers(per_minute, count, reset)
            if count > per_minute:
                raise rate_limited(
                    f"Rate limit reached for {scope} {who!r}: {per_minute} requests per minute"
                    " (gateway.limits).",
                    reset,
                    admission.headers,
                )
        for scope, who, limit in (("identity", identity, mine), ("agent", agent, agents)):
            at_once = limit.concurrent_turns
            if at_once is None:
                continue
            key = f"turns:{scope}:{who}"
            token = await self._counts.enter(key, at_once)
            if token is None:
                await admission.release()
                raise rate_limited(
                    f"Too many turns at once for {scope} {who!r}: at most {at_once}"
                    " (gateway.limits).",
                    1,
                    admission.headers,
                )
            admission.places.append((key, token))
        return admission


def _rate_headers(limit: int, count: int, reset: float) -> RequestHeaders:
    """OpenAI's rate-limit headers for requests."""
    return [
        (b"x-ratelimit-limit-requests", str(limit).encode()),
        (b"x-ratelimit-remaining-requests", str(max(limit - count, 0)).encode()),
        (b"x-ratelimit-reset-requests", f"{max(math.ceil(reset), 1)}s".encode()),
    ]
