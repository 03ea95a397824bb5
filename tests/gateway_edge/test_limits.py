"""`gateway.limits` budgets and the stores that count them: the same behaviour in this process,
in the machine's Redis and in its PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from gateway_edge.errors import ApiError
from gateway_edge.limit_counts import Count, Counts, LocalCounts, Taken, window
from gateway_edge.limits import Limits
from gateway_edge.postgres_counts import PostgresCounts
from gateway_edge.redis_counts import RedisCounts
from services.limits_config import LimitsConfig

REDIS_URL = "redis://127.0.0.1:6379/12"  # the unit tests' own database
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def test_windows_are_utc_minutes_days_and_calendar_months() -> None:
    new_year = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert window("month", new_year - 10) == ("2026-12", 10)
    assert window("month", new_year)[0] == "2027-01"
    label, left = window("month", new_year + 3600)
    assert label == "2027-01" and left == 31 * 86_400 - 3600
    assert window("day", new_year - 1)[1] == 1
    assert window("minute", new_year + 59)[1] == 1


@pytest.fixture(params=["local", "redis", "postgres"])
async def counts(request: pytest.FixtureRequest) -> AsyncIterator[Counts]:
    store: Counts
    if request.param == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()
        store = RedisCounts(REDIS_URL)
    elif request.param == "postgres":
        store = PostgresCounts(POSTGRES_URL)
    else:
        store = LocalCounts()
    yield store
    await store.close()


async def test_counts_add_up_per_window_and_refuse_past_their_ceiling(counts: Counts) -> None:
    key = uuid.uuid4().hex  # PostgreSQL's counts outlive the test
    rpm, tokens = Count(f"a{key}", "minute", 1, 2), Count(f"b{key}", "day", 0, 99)
    assert await counts.take([rpm, tokens], [], "t1") == Taken([1, 0], over=False, full=None)
    await counts.give_back([Count(f"b{key}", "day", 60)], [], "t1")
    assert (await counts.take([rpm, tokens], [], "t2")).totals == [2, 60]
    third = await counts.take([rpm, tokens], [], "t3")
    assert third.totals == [3, 60] and third.over  # the third request in the minute
    await counts.give_back([Count(f"b{key}", "day", 40)], [], "t3")
    assert (await counts.take([tokens], [], "t4")).over  # 100 spent: over 99
    # Another period is another window, even under the same key.
    assert (await counts.take([Count(f"b{key}", "month", 7)], [], "t5")).totals == [7]


async def test_places_are_taken_all_or_none_and_given_back(counts: Counts) -> None:
    mine, ours = uuid.uuid4().hex, uuid.uuid4().hex
    assert (await counts.take([], [(mine, 2), (ours, 2)], "a")).full is None
    assert (await counts.take([], [(mine, 2), (ours, 2)], "b")).full is None
    refused = await counts.take([], [(mine, 3), (ours, 2)], "c")
    assert refused.full == 1 and not refused.over
    # "c" held none: the first set still has room for exactly one more.
    assert (await counts.take([], [(mine, 3)], "d")).full is None
    assert (await counts.take([], [(mine, 3)], "e")).full == 0
    await counts.give_back([], [mine, ours], "a")
    assert (await counts.take([], [(mine, 3), (ours, 2)], "f")).full is None


async def test_a_request_over_a_ceiling_takes_no_place(counts: Counts) -> None:
    key = uuid.uuid4().hex
    spent = Count(f"spent{key}", "day", 0, -1)  # nothing left
    assert (await counts.take([spent], [(key, 1)], "a")).over
    assert (await counts.take([], [(key, 1)], "b")).full is None  # the place was free


async def test_many_requests_at_once_take_exactly_the_places_there_are(counts: Counts) -> None:
    key = uuid.uuid4().hex
    taken = await asyncio.gather(*(counts.take([], [(key, 3)], f"t{n}") for n in range(8)))
    assert sum(result.full is None for result in taken) == 3


def limits_of(config: dict[str, Any]) -> Limits:
    failures: list[int] = []
    return Limits(LimitsConfig.model_validate(config), LocalCounts(), lambda: failures.append(1))


async def test_a_token_budget_leaves_room_then_refuses_with_insufficient_quota() -> None:
    limits = limits_of({"default": {"tokensPerDay": 100}, "agents": {"main": {"tokensPerDay": 70}}})
    first = await limits.admit("ann", "main")
    assert first.tokens_left == 70 and first.usd_left is None  # the agent's is the smaller
    await first.finish(60, 0.0)
    other_agent = await limits.admit("ann", "other")
    assert other_agent.tokens_left == 40
    await other_agent.finish(45, 0.0)
    with pytest.raises(ApiError) as refused:
        await limits.admit("ann", "other")
    error = refused.value
    assert (error.status, error.type, error.code) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert "100 tokens per day" in error.message and int(error.headers["retry-after"]) >= 1
    assert (await limits.admit("bob", "other")).tokens_left == 100  # budgets are per identity


async def test_tokens_per_minute_is_a_rate_limit_with_openais_token_headers() -> None:
    limits = limits_of({"default": {"tokensPerMinute": 50, "requestsPerMinute": 10}})
    admission = await limits.admit("ann", "main")
    headers = dict(admission.headers)
    assert headers[b"x-ratelimit-limit-tokens"] == b"50"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"50"
    assert headers[b"x-ratelimit-remaining-requests"] == b"9"
    await admission.finish(50, 0.0)
    with pytest.raises(ApiError) as refused:
        await limits.admit("ann", "main")
    assert refused.value.type == "rate_limit_error"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "8"


async def test_usd_budgets_count_in_millionths_and_the_smallest_room_wins() -> None:
    limits = limits_of({"default": {"usdPerDay": 2.5, "usdPerMonth": 3}})
    admission = await limits.admit("ann", "main")
    assert admission.usd_left == 2.5 and admission.tokens_left is None
    await admission.finish(1000, 0.75)
    second = await limits.admit("ann", "main")
    assert second.usd_left == pytest.approx(1.75)
    await second.finish(1000, 1.75)
    with pytest.raises(ApiError) as refused:
        await limits.admit("ann", "main")
    assert refused.value.type == "insufficient_quota" and "2.5 USD per day" in refused.value.message


async def test_a_tool_call_counts_as_a_request_but_not_against_budgets() -> None:
    limits = limits_of({"default": {"tokensPerDay": 10, "requestsPerMinute": 2}})
    spent = await limits.admit("ann", "main")
    await spent.finish(10, 0.0)
    tool_call = await limits.admit("ann", "main", spends=False)
    assert tool_call.tokens_left is None and not tool_call.charges
    with pytest.raises(ApiError) as refused:
        await limits.admit("ann", "main", spends=False)
    assert refused.value.type == "rate_limit_error"  # the third request in the minute


async def test_a_turn_holds_its_place_until_it_finishes_or_fails() -> None:
    limits = limits_of({"default": {"concurrentTurns": 1}})
    running = await limits.admit("ann", "main")
    with pytest.raises(ApiError) as refused:
        await limits.admit("ann", "main")
    assert "at most 1" in refused.value.message and refused.value.headers["retry-after"] == "1"
    await running.finish(10, 0.0)
    failed = await limits.admit("ann", "main")
    await failed.release()  # a failed turn gives its place back too
    await failed.release()  # once
    await (await limits.admit("ann", "main")).release()
