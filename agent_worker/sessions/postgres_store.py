"""Transcripts in PostgreSQL (asyncpg), for workers on several machines.

A turn holds a session-level advisory lock on its key for as long as it runs, on a connection
of its own, and reads and writes the session on that same connection: a turn never needs a
second connection (with more turns than connections, a second one was a deadlock), and if the
connection dies the lock dies with it and the turn's write fails instead of landing unlocked.
Two workers never interleave one session's turns, and a worker that dies releases its locks with
its connections, so the session fails over at once.

Every driver error leaves this module as SessionStoreError (mapped once, here).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from agent_worker.domain import ChatMessage, SessionSummary, StoredResponse
from agent_worker.errors import SessionBusyError, SessionStoreError
from agent_worker.sessions.postgres_schema import (
    MESSAGES_TABLE,
    RESPONSES_TABLE,
    SESSIONS_TABLE,
    SUMMARIZE,
    migrate,
)
from agent_worker.sessions.records import message_of, row_values
from agent_worker.sessions.store import NO_ORIGIN, TurnOrigin, title_of

log = logging.getLogger("clawgate.worker.sessions")
_DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
# What the pool hands out (a proxy of asyncpg.Connection); asyncpg has no stubs.
Connection = Any


def advisory_key(session_key: str) -> int:
    """A stable signed 64-bit lock id for a session key (same in every worker)."""
    digest = hashlib.blake2b(session_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def _store_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except _DRIVER_ERRORS as error:
        raise SessionStoreError(
            f"the session store (PostgreSQL) failed while {doing}: {error}"
        ) from None


class PostgresSessionStore:
    def __init__(self, url: str, pool_size: int = 20) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # The connection the current turn holds its session's lock on, seen only by that turn's
        # task (and tasks it starts): a GetSession beside the turn must not share it, since one
        # connection runs one query at a time.
        self._held: contextvars.ContextVar[tuple[str, Connection] | None] = contextvars.ContextVar(
            "clawgate_held_session", default=None
        )

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the session store is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size)
        async with self.pool.acquire() as connection:
            await migrate(connection)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        """Whether the store answers with its schema in place; a schema that vanished (the
        database was dropped and made again) is created again here."""
        try:
            async with self.pool.acquire(timeout=5) as connection:
                if not await connection.fetchval(
                    "SELECT to_regclass($1) IS NOT NULL", MESSAGES_TABLE
                ):
                    log.warning("the session table is gone; creating the schema again")
                    await migrate(connection)
        except (*_DRIVER_ERRORS, RuntimeError) as error:
            log.warning("session store check failed: %s", error)
            return False
        return True

    @asynccontextmanager
    async def session_lock(self, session_key: str, wait_seconds: float) -> AsyncIterator[None]:
        async with self._connection(wait_seconds) as connection:
            lock_id = advisory_key(session_key)
            with _store_errors("locking the session"):
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
            held = self._held.set((session_key, connection))
            try:
                yield
            finally:
                self._held.reset(held)
                await self._unlock(connection, lock_id)

    @asynccontextmanager
    async def _connection(self, wait_seconds: float) -> AsyncIterator[Connection]:
        with _store_errors("taking a connection for the session lock"):
            try:
                connection = await self.pool.acquire(timeout=max(wait_seconds, 0.001))
            except TimeoutError:
                raise SessionBusyError(
                    f"no session store connection was free within {wait_seconds:g}s"
                    " (sessions.poolSize)"
                ) from None
        try:
            yield connection
        finally:
            try:
                await self.pool.release(connection)
            except _DRIVER_ERRORS as error:
                log.warning("a broken session store connection was dropped: %s", error)

    @asynccontextmanager
    async def _connection_for(self, session_key: str) -> AsyncIterator[Connection]:
        """The connection holding the session's lock, for the turn that holds it; any other
        caller takes one from the pool."""
        held = self._held.get()
        if held is not None and held[0] == session_key:
            yield held[1]
        else:
            async with self.pool.acquire() as connection:
                yield connection

    @staticmethod
    async def _unlock(connection: Connection, lock_id: int) -> None:
        try:
            await connection.execute("SELECT pg_advisory_unlock($1)", lock_id)
        except _DRIVER_ERRORS as error:
            # The connection is gone, and the lock with it; the pool replaces the connection.
            log.warning("session unlock failed (the lock went with its connection): %s", error)

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        query = (
            f"SELECT role, content, tool_calls, tool_call_id, name FROM {MESSAGES_TABLE}"
            " WHERE session_key = $1 ORDER BY seq DESC LIMIT $2"
        )
        with _store_errors("reading the session"):
            async with self._connection_for(session_key) as connection:
                rows = await connection.fetch(query, session_key, limit)
        return [message_of(*row) for row in reversed(rows)]

    async def append_turn(
        self,
        session_key: str,
        messages: Sequence[ChatMessage],
        origin: TurnOrigin = NO_ORIGIN,
    ) -> None:
        with _store_errors("writing the turn"):
            async with self._connection_for(session_key) as connection, connection.transaction():
                last = await connection.fetchval(
                    f"SELECT COALESCE(MAX(seq), 0) FROM {MESSAGES_TABLE} WHERE session_key = $1",
                    session_key,
                )
                await connection.executemany(
                    f"INSERT INTO {MESSAGES_TABLE}"
                    " (session_key, seq, role, content, tool_calls, tool_call_id, name)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    [
                        (session_key, last + offset, *row_values(message))
                        for offset, message in enumerate(messages, start=1)
                    ],
                )
                await connection.execute(
                    SUMMARIZE, session_key, origin.agent_id, title_of(messages), time.time()
                )
                if origin.response_id:
                    await connection.execute(
                        f"INSERT INTO {RESPONSES_TABLE} (response_id, session_key, agent_id)"
                        " VALUES ($1, $2, $3)",
                        origin.response_id,
                        session_key,
                        origin.agent_id,
                    )

    async def find_response(self, response_id: str) -> StoredResponse | None:
        with _store_errors("finding the response"):
            row = await self.pool.fetchrow(
                f"SELECT session_key, agent_id FROM {RESPONSES_TABLE} WHERE response_id = $1",
                response_id,
            )
        return None if row is None else StoredResponse(row[0], row[1])

    async def list_sessions(
        self, agent_id: str, limit: int, after: tuple[float, str] | None
    ) -> list[SessionSummary]:
        conditions: list[str] = []
        values: list[object] = []
        if agent_id:
            values.append(agent_id)
            conditions.append(f"agent_id = ${len(values)}")
        if after is not None:
            values += [after[0], after[1]]
            conditions.append(f"(updated_at, session_key) < (${len(values) - 1}, ${len(values)})")
        values.append(limit)
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        with _store_errors("listing the sessions"):
            rows = await self.pool.fetch(
                f"SELECT session_key, agent_id, title, turns, updated_at FROM {SESSIONS_TABLE}"
                f" {where} ORDER BY updated_at DESC, session_key DESC LIMIT ${len(values)}",
                *values,
            )
        return [SessionSummary(*row) for row in rows]

    async def delete(self, session_key: str) -> bool:
        with _store_errors("deleting the session"):
            async with self.pool.acquire() as connection, connection.transaction():
                result = await connection.execute(
                    f"DELETE FROM {MESSAGES_TABLE} WHERE session_key = $1", session_key
                )
                for table in (SESSIONS_TABLE, RESPONSES_TABLE):
                    await connection.execute(
                        f"DELETE FROM {table} WHERE session_key = $1", session_key
                    )
        return bool(result != "DELETE 0")
