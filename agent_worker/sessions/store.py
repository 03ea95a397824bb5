"""The interface of a transcript store and how a store is chosen from `sessions.store`."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from agent_worker.domain import ChatMessage, StoredResponse
from services.config import POSTGRES_URL_PREFIXES

# A turn's response id and its agent, stored with the turn.
ResponseTag = tuple[str, str]


class SessionStore(Protocol):
    async def open(self) -> None:
        """Connects and creates or migrates the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """Whether the store answers now (for readiness)."""

    def session_lock(
        self, session_key: str, wait_seconds: float
    ) -> AbstractAsyncContextManager[None]:
        """Holds the session for one turn across the processes that share this store, where the
        store can lock across processes (PostgreSQL; SQLite holds nothing here: the turn runner
        orders a session's turns within its process and the edge keeps the session on one
        worker); raises SessionBusyError after `wait_seconds`."""

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's messages, oldest first; only the last `limit` when given."""

    def append_turn(
        self,
        session_key: str,
        messages: Sequence[ChatMessage],
        response: ResponseTag | None = None,
    ) -> Awaitable[None]:
        """Appends one turn's messages atomically: all of them are stored, or none, and with
        them the turn's response id when it has one. A store may start the write at once and
        return a future (no task for the caller to shield)."""

    async def find_response(self, response_id: str) -> StoredResponse | None:
        """The session and agent of a stored response id; None when unknown."""

    async def delete(self, session_key: str) -> bool:
        """Deletes the transcript; whether there was one."""


class UnsupportedStoreError(ValueError):
    pass


def store_for_url(url: str, pool_size: int = 20) -> SessionStore:
    """`sqlite:///path` (`~` expanded), `sqlite:///:memory:` or `postgresql://…`."""
    if url.startswith("sqlite:///"):
        from agent_worker.sessions.sqlite_store import SqliteSessionStore

        location = url.removeprefix("sqlite:///")
        return SqliteSessionStore(
            location if location == ":memory:" else Path(location).expanduser()
        )
    if url.startswith(POSTGRES_URL_PREFIXES):
        from agent_worker.sessions.postgres_store import PostgresSessionStore

        return PostgresSessionStore(url, pool_size)
    raise UnsupportedStoreError(
        f"sessions.store: unsupported store URL {url!r} (use sqlite:///PATH or postgresql://…)"
    )
