from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent_worker.sessions.sqlite_store import SqliteSessionStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteSessionStore]:
    """A SQLite store in a file of its own, open for the test."""
    store = SqliteSessionStore(tmp_path / "s.db")
    await store.open()
    yield store
    await store.close()
