"""The store a worker uses, chosen from `sessions.store`: each store module is imported only
when its URL asks for it (asyncpg is not loaded for a SQLite file)."""

from __future__ import annotations

from pathlib import Path

from agent_worker.sessions.store import SessionStore
from services.config import POSTGRES_URL_PREFIXES


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
