"""Transcripts in PostgreSQL (asyncpg), for workers on several machines.

A turn holds a session-level advisory lock on its key for as long as it runs, on a connection
of its own: two workers never interleave one session's turns, and a worker that dies releases
its locks with its connections, so the session fails over at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import cast

import asyncpg

from agent_worker.domain import ChatMessage, Role
from agent_worker.errors import SessionBusyError
from agent_worker.sessions.locks import SessionLocks

SCHEMA_VERSION = 1
_MIGRATIONS = {
    1: """
    CREATE TABLE clawgate_session_messages (
        session_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (session_key, seq)
    );
    """,
}
_MIGRATION_LOCK = 0x636C6177  # "claw": one worker migrates at a time


def advisory_key(session_key: str) -> int:
    """A stable signed 64-bit lock id for a session key (same in every worker)."""
    digest = hashlib.blake2b(session_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresSessionStore:
    def __init__(self, url: str, pool_size: int = 20) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._local = SessionLocks()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the session store is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size)
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS clawgate_schema (version INTEGER NOT NULL)"
            )
            version = await connection.fetchval("SELECT max(version) FROM clawgate_schema") or 0
            for number in range(version + 1, SCHEMA_VERSION + 1):
                await connection.execute(_MIGRATIONS[number])
                await connection.execute("INSERT INTO clawgate_schema VALUES ($1)", number)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            await self.pool.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, RuntimeError):
            return False
        return True

    @asynccontextmanager
    async def session_lock(self, session_key: str, wait_seconds: float) -> AsyncIterator[None]:
        # The local lock first: waiting turns of this worker do not each hold a connection.
        async with self._local.hold(session_key, wait_seconds), self.pool.acquire() as connection:
            lock_id = advisory_key(session_key)
            try:
                await connection.execute(
                    "SELECT set_config('lock_timeout', $1, false)",
                    f"{max(int(wait_seconds * 1000), 1)}ms",
                )
                await connection.execute("SELECT pg_advisory_lock($1)", lock_id)
            except asyncpg.exceptions.LockNotAvailableError:
                raise SessionBusyError(
                    "session is busy: another worker's turn did not finish"
                    f" within {wait_seconds:g}s"
                ) from None
            try:
                yield
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", lock_id)

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        rows = await self.pool.fetch(
            "SELECT role, content FROM clawgate_session_messages WHERE session_key = $1"
            " ORDER BY seq DESC LIMIT $2",
            session_key,
            limit,
        )
        return [ChatMessage(cast(Role, row["role"]), row["content"]) for row in reversed(rows)]

    async def append_turn(self, session_key: str, messages: Sequence[ChatMessage]) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            last = await connection.fetchval(
                "SELECT COALESCE(MAX(seq), 0) FROM clawgate_session_messages"
                " WHERE session_key = $1",
                session_key,
            )
            await connection.executemany(
                "INSERT INTO clawgate_session_messages (session_key, seq, role, content)"
                " VALUES ($1, $2, $3, $4)",
                [
                    (session_key, last + offset, message.role, message.text)
                    for offset, message in enumerate(messages, start=1)
                ],
            )

    async def delete(self, session_key: str) -> bool:
        result = await self.pool.execute(
            "DELETE FROM clawgate_session_messages WHERE session_key = $1", session_key
        )
        return result != "DELETE 0"
