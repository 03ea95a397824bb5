from __future__ import annotations

import asyncio

import pytest

from agent_worker.errors import SessionBusyError
from agent_worker.sessions.locks import SessionLocks


async def test_one_key_runs_in_order_other_keys_in_parallel() -> None:
    locks = SessionLocks()
    order: list[str] = []

    async def turn(key: str, name: str, hold: float) -> None:
        async with locks.hold(key, wait_seconds=5):
            order.append(f"{name}+")
            await asyncio.sleep(hold)
            order.append(f"{name}-")

    await asyncio.gather(turn("a", "a1", 0.05), turn("a", "a2", 0), turn("b", "b1", 0))
    assert order.index("a1-") < order.index("a2+")
    assert order.index("b1+") < order.index("a1-")
    assert locks.active == 0


async def test_waiting_too_long_is_session_busy() -> None:
    locks = SessionLocks()
    async with locks.hold("a", wait_seconds=1):
        with pytest.raises(SessionBusyError):
            async with locks.hold("a", wait_seconds=0.05):
                pass
    assert locks.active == 0
