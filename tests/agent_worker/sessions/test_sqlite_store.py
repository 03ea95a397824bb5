from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent_worker.domain import ChatMessage
from agent_worker.sessions.sqlite_store import SqliteSessionStore
from agent_worker.sessions.store import UnsupportedStoreError, store_for_url


async def test_turns_append_in_order_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "s.db"
    store = SqliteSessionStore(path)
    await store.open()
    await store.append_turn("k", [ChatMessage("user", "q1"), ChatMessage("assistant", "a1")])
    await store.append_turn("k", [ChatMessage("user", "q2"), ChatMessage("assistant", "a2")])
    await store.append_turn("other", [ChatMessage("user", "x")])
    await store.close()

    reopened = SqliteSessionStore(path)
    await reopened.open()
    assert [m.text for m in await reopened.load("k")] == ["q1", "a1", "q2", "a2"]
    assert [m.text for m in await reopened.load("k", limit=3)] == ["a1", "q2", "a2"]
    assert await reopened.load("absent") == []
    assert await reopened.delete("k") is True
    assert await reopened.delete("k") is False
    assert [m.text for m in await reopened.load("other")] == ["x"]
    await reopened.close()


async def test_a_failed_append_writes_nothing(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    await store.append_turn("k", [ChatMessage("user", "ok")])
    with pytest.raises(sqlite3.Error):
        await store.append_turn("k", [ChatMessage("user", "half"), ChatMessage("assistant", None)])  # type: ignore[arg-type]
    assert [m.text for m in await store.load("k")] == ["ok"]
    await store.close()


def test_store_urls() -> None:
    assert isinstance(store_for_url("sqlite:///:memory:"), SqliteSessionStore)
    with pytest.raises(UnsupportedStoreError, match="sessions.store"):
        store_for_url("mysql://x")


async def test_turns_ending_together_share_a_commit_and_keep_their_order(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    await asyncio.gather(
        *(store.append_turn(f"k{n % 2}", [ChatMessage("user", f"q{n}")]) for n in range(20))
    )
    assert [m.text for m in await store.load("k0")] == [f"q{n}" for n in range(0, 20, 2)]
    assert [m.text for m in await store.load("k1")] == [f"q{n}" for n in range(1, 20, 2)]
    await store.close()


async def test_a_bad_turn_in_a_group_fails_only_itself(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    bad = [ChatMessage("user", "half"), ChatMessage("assistant", None)]  # type: ignore[arg-type]
    results = await asyncio.gather(
        store.append_turn("a", [ChatMessage("user", "fine")]),
        store.append_turn("b", bad),
        store.append_turn("c", [ChatMessage("user", "also fine")]),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.Error)
    assert [m.text for m in await store.load("a")] == ["fine"]
    assert await store.load("b") == []
    assert [m.text for m in await store.load("c")] == ["also fine"]
    await store.close()


async def test_opening_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    """Found by CI: of two workers starting on one new file, one failed 'database is locked'
    switching it to WAL (SQLite answers that at once instead of waiting)."""
    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE held (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO held VALUES (1)")
    asyncio.get_running_loop().call_later(0.3, lambda: other.execute("COMMIT"))
    store = SqliteSessionStore(path)
    await store.open()
    await store.append_turn("k", [ChatMessage("user", "after the wait")])
    assert [m.text for m in await store.load("k")] == ["after the wait"]
    await store.close()
    other.close()
