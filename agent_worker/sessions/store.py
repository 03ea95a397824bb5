"""The interface of a transcript store and how a store is chosen from `sessions.store`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from agent_worker.domain import ChatMessage


class SessionStore(Protocol):
    async def open(self) -> None:
        """Connects and creates or migrates the schema."""

    async def close(self) -> None: ...

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's messages, oldest first; only the last `limit` when given."""

    async def append_turn(self, session_key: str, messages: Sequence[ChatMessage]) -> None:
        """Appends one turn's messages atomically: all of them are stored, or none."""

    async def delete(self, session_key: str) -> bool:
        """Deletes the transcript; whether there was one."""


class UnsupportedStoreError(ValueError):
    pass


def store_for_url(url: str) -> SessionStore:
    """`sqlite:///path` (`~` expanded) or `sqlite:///:memory:`."""
    from agent_worker.sessions.sqlite_store import SqliteSessionStore

    if url.startswith("sqlite:///"):
        location = url.removeprefix("sqlite:///")
        return SqliteSessionStore(
            location if location == ":memory:" else Path(location).expanduser()
        )
    raise UnsupportedStoreError(
        f"sessions.store: unsupported store URL {url!r} (use sqlite:///PATH)"
    )
