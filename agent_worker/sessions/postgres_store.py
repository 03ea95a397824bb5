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
from agent_worker.sessions.records import message_of, row_values
from agent_worker.sessions.store import NO_ORIGIN, TurnOrigin, title_of

log = logging.getLogger("clawgate.worker.sessions")
SCHEMA_VERSION = 4
_MESSAGES_TABLE = "clawgate_session_messages"
_RESPONSES_TABLE = "clawgate_responses"
_SESSIONS_TABLE = "clawgate_sessions"
_MIGRATIONS = {
    1: f"""
    CREATE TABLE IF NOT EXISTS {_MESSAGES_TABLE} (
        session_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (session_key, seq)
    );
    """,
    # Structured messages: an assistant's tool calls (a JSON list), a tool result's call id
    # and tool name. Rows from version 1 read as plain messages.
    2: f"""
    ALTER TABLE {_MESSAGES_TABLE}
        ADD COLUMN IF NOT EXISTS tool_calls TEXT,
        ADD COLUMN IF NOT EXISTS tool_call_id TEXT,
        ADD COLUMN IF NOT EXISTS name TEXT;
    """,
    # Responses API ids, stored with their turn, so previous_response_id finds the session.
    3: f"""
    CREATE TABLE IF NOT EXISTS {_RESPONSES_TABLE} (
        response_id TEXT PRIMARY KEY,
        session_key TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    """,
    # Each session's summary for listings (newest first, per agent), filled for sessions
    # written before it from their messages.
    4: f"""
    CREATE TABLE IF NOT EXISTS {_SESSIONS_TABLE} (
        session_key TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        title TEXT NOT NULL,
        turns INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS clawgate_sessions_by_update
        ON {_SESSIONS_TABLE} (updated_at, session_key);
    CREATE INDEX IF NOT EXISTS clawgate_sessions_by_agent
        ON {_SESSIONS_TABLE} (agent_id, updated_at, session_key);
    INSERT INTO {_SESSIONS_TABLE} (session_key, agent_id, title, turns, updated_at)
    SELECT m.session_key, '',
           COALESCE((SELECT left(f.content, 80) FROM {_MESSAGES_TABLE} f
                     WHERE f.session_key = m.session_key AND f.role = 'user'
                     ORDER BY f.seq LIMIT 1), ''),
           count(*) FILTER (WHERE m.role = 'user'),
           extract(epoch FROM max(m.created_at))
    FROM {_MESSAGES_TABLE} m GROUP BY m.session_key
    ON CONFLICT DO NOTHING;
    """,
}
_SUMMARIZE = f"""
INSERT INTO {_SESSIONS_TABLE} (session_key, agent_id, title, turns, updated_at)
VALUES ($1, $2, $3, 1, $4)
ON CONFLICT (session_key) DO UPDATE SET
    turns = {_SESSIONS_TABLE}.turns + 1,
    updated_at = excluded.updated_at,
    agent_id = CASE WHEN {_SESSIONS_TABLE}.agent_id = '' THEN excluded.agent_id
                    ELSE {_SESSIONS_TABLE}.agent_id END,
    title = CASE WHEN {_SESSIONS_TABLE}.title = '' THEN excluded.title
                 ELSE {_SESSIONS_TABLE}.title END
"""
_MIGRATION_LOCK = 0x636C6177  # "claw": one worker migrates at a time
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


async def _migrate(connection: Connection) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS clawgate_schema (version INTEGER NOT NULL)"
        )
        version = await connection.fetchval("SELECT max(version) FROM clawgate_schema") or 0
        if not await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", _MESSAGES_TABLE):
            version = 0  # the table was dropped under us: build it again from the start
        for number in range(version + 1, SCHEMA_VERSION + 1):
            await connection.execute(_MIGRATIONS[number])
            await connection.execute("INSERT INTO clawgate_schema VALUES ($1)", number)


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
            await _migrate(connection)

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
                    "SELECT to_regclass($1) IS NOT NULL", _MESSAGES_TABLE
                ):
                    log.warning("the session table is gone; creating the schema again")
                    await _migrate(connection)
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
            f"SELECT role, content, tool_calls, tool_call_id, name FROM {_MESSAGES_TABLE}"
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
                    f"SELECT COALESCE(MAX(seq), 0) FROM {_MESSAGES_TABLE} WHERE session_key = $1",
                    session_key,
                )
                await connection.executemany(
                    f"INSERT INTO {_MESSAGES_TABLE}"
                    " (session_key, seq, role, content, tool_calls, tool_call_id, name)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    [
                        (session_key, last + offset, *row_values(message))
                        for offset, message in enumerate(messages, start=1)
                    ],
                )
                await connection.execute(
                    _SUMMARIZE, session_key, origin.agent_id, title_of(messages), time.time()
                )
                if origin.response_id:
                    await connection.execute(
                        f"INSERT INTO {_RESPONSES_TABLE} (response_id, session_key, agent_id)"
                        " VALUES ($1, $2, $3)",
                        origin.response_id,
                        session_key,
                        origin.agent_id,
                    )

    async def find_response(self, response_id: str) -> StoredResponse | None:
        with _store_errors("finding the response"):
            row = await self.pool.fetchrow(
                f"SELECT session_key, agent_id FROM {_RESPONSES_TABLE} WHERE response_id = $1",
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
                f"SELECT session_key, agent_id, title, turns, updated_at FROM {_SESSIONS_TABLE}"
                f" {where} ORDER BY updated_at DESC, session_key DESC LIMIT ${len(values)}",
                *values,
            )
        return [SessionSummary(*row) for row in rows]

    async def delete(self, session_key: str) -> bool:
        with _store_errors("deleting the session"):
            async with self.pool.acquire() as connection, connection.transaction():
                result = await connection.execute(
                    f"DELETE FROM {_MESSAGES_TABLE} WHERE session_key = $1", session_key
                )
                for table in (_SESSIONS_TABLE, _RESPONSES_TABLE):
                    await connection.execute(
                        f"DELETE FROM {table} WHERE session_key = $1", session_key
                    )
        return bool(result != "DELETE 0")
