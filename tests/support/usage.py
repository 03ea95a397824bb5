"""One check of a session store's usage records, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
import uuid

from agent_worker.domain import ChatMessage, Usage
from agent_worker.sessions.store import SessionStore, TurnOrigin
from agent_worker.usage import ModelUsage, UsageQuery


async def check_usage_sums(store: SessionStore) -> None:
    """Turns of two people on two models: sums by identity and model, one person's own, a
    range that holds none."""
    start = time.time() - 1
    alice, bob = f"alice-{uuid.uuid4().hex}", f"bob-{uuid.uuid4().hex}"
    big = ModelUsage("p", "big", Usage(1_000, 100, cache_read_tokens=600), 0.25)
    small = ModelUsage("p", "small", Usage(50, 5), None)
    for owner, calls in ((alice, (big, small)), (alice, (big,)), (bob, (small,))):
        await store.append_turn(
            f"k-{uuid.uuid4().hex}",
            [ChatMessage("user", "q"), ChatMessage("assistant", "a")],
            TurnOrigin("main", owner=owner, usage=calls, run_id=uuid.uuid4().hex),
        )
    end = time.time() + 1
    everyone = await store.usage(UsageQuery(start, end, ("identity", "model")))
    mine = [row for row in everyone if row.identity in (alice, bob)]
    assert [(row.identity, row.model, row.requests) for row in mine] == sorted(
        [(alice, "p/big", 2), (alice, "p/small", 1), (bob, "p/small", 1)]
    )
    alice_big = mine[0]
    assert (alice_big.input_tokens, alice_big.output_tokens) == (2_000, 200)
    assert (alice_big.cache_read_tokens, alice_big.cost_usd) == (1_200, 0.5)
    (own,) = await store.usage(UsageQuery(start, end, (), identity=alice))
    assert (own.requests, own.input_tokens, own.cost_usd, own.identity) == (2, 2_050, 0.5, "")
    by_day = await store.usage(UsageQuery(start, end, ("day",), identity=bob))
    assert [row.day for row in by_day] == [time.strftime("%Y-%m-%d", time.gmtime(end))]
    assert await store.usage(UsageQuery(end, end + 60, ("identity",), identity=alice)) == []
