from __future__ import annotations

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
