"""Transcripts in PostgreSQL (asyncpg), for workers on several machines.

A turn holds its session's lease (postgres_leases.py) while it runs, but no connection: each
read and write takes a pooled connection for its own length, so one worker runs many more turns
than its pool has connections. The turn's write checks in its transaction that the lease is
still the turn's, so a turn whose session moved to another worker stores nothing.

Every driver error leaves this module as SessionStoreError (mapped once, in postgres_errors.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import asyncpg

from agent_worker.domain import (
    ChatMessage,
    Compaction,
    SessionSummary,
    StoredContext,
    StoredResponse,
)
from agent_worker.sessions.postgres_errors import DRIVER_ERRORS, store_errors
from agent_worker.sessions.postgres_leases import LEASE_SECONDS, SessionLeases
from agent_worker.sessions.postgres_runs import PostgresRuns
from agent_worker.sessions.postgres_schema import (
    COMPACTIONS_TABLE,
    INSERT_COMPACTION,
    LOAD_CONTEXT,
    MESSAGES_TABLE,
    RESPONSES_TABLE,
    RUNS_TABLE,
    SESSIONS_TABLE,
    SUMMARIZE,
    USAGE_TABLE,
    migrate,
)
from agent_worker.sessions.records import (
    COMPACTION_COLUMNS,
    MESSAGE_COLUMNS,
    POSTGRES_DAY,
    message_of,
    row_values,
    usage_insert,
    usage_rows,
    usage_select,
    usage_sums,
    usage_values,
)
from agent_worker.sessions.store import NO_ORIGIN, TurnOrigin, title_of
from agent_worker.usage import ModelUsage, UsageQuery, UsageSums

log = logging.getLogger("clawgate.worker.sessions")
_INSERT_USAGE = usage_insert(USAGE_TABLE, "${}")


class PostgresSessionStore(PostgresRuns):
    system = "postgresql"

    def __init__(self, url: str, pool_size: int = 20, lease_seconds: float = LEASE_SECONDS) -> None:
        self._url = url
        self._pool_size = pool_size
        self._lease_seconds = lease_seconds
        self._pool: asyncpg.Pool | None = None
        self._leases: SessionLeases | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the session store is not open")
        return self._pool

    @property
    def leases(self) -> SessionLeases:
        if self._leases is None:
            raise RuntimeError("the session store is not open")
        return self._leases

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size)
        async with self.pool.acquire() as connection:
            await migrate(connection)
        self._leases = SessionLeases(self._url, self._pool, self._lease_seconds)
        await self._leases.start()

    async def close(self) -> None:
        if self._leases is not None:
            await self._leases.stop()
            self._leases = None
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
        except (*DRIVER_ERRORS, RuntimeError) as error:
            log.warning("session store check failed: %s", error)
            return False
        return True

    def session_lock(
        self, session_key: str, wait_seconds: float
    ) -> AbstractAsyncContextManager[None]:
        return self.leases.hold(session_key, wait_seconds)

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        query = (
            f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_TABLE}"
            " WHERE session_key = $1 ORDER BY seq DESC LIMIT $2"
        )
        with store_errors("reading the session"):
            rows = await self.pool.fetch(query, session_key, limit)
        return [message_of(*row) for row in reversed(rows)]

    async def load_context(self, session_key: str, limit: int | None = None) -> StoredContext:
        with store_errors("reading the session"):
            rows = await self.pool.fetch(LOAD_CONTEXT, session_key, limit)
        messages = [message_of(*row[1:7]) for row in reversed(rows) if row[0] is not None]
        covers, summary = rows[0][7], rows[0][8]
        compaction = None if summary is None else Compaction(*rows[0][7:])
        first = min((row[0] for row in rows if row[0] is not None), default=covers + 1) - 1
        return StoredContext(messages, first, compaction)

    async def compactions(self, session_key: str) -> list[Compaction]:
        with store_errors("reading the session's compactions"):
            rows = await self.pool.fetch(
                f"SELECT {COMPACTION_COLUMNS} FROM {COMPACTIONS_TABLE}"
                " WHERE session_key = $1 ORDER BY covers",
                session_key,
            )
        return [Compaction(*row) for row in rows]

    async def add_compaction(self, session_key: str, compaction: Compaction) -> None:
        with store_errors("storing the compaction"):
            await self.pool.execute(INSERT_COMPACTION, session_key, *_compaction_values(compaction))

    async def append_turn(
        self,
        session_key: str,
        messages: Sequence[ChatMessage],
        origin: TurnOrigin = NO_ORIGIN,
    ) -> None:
        with store_errors("writing the turn"):
            async with self.pool.acquire() as connection, connection.transaction():
                await self.leases.fence(connection, session_key)
                last = await connection.fetchval(
                    f"SELECT COALESCE(MAX(seq), 0) FROM {MESSAGES_TABLE} WHERE session_key = $1",
                    session_key,
                )
                await connection.executemany(
                    f"INSERT INTO {MESSAGES_TABLE}"
                    f" (session_key, seq, {MESSAGE_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    [
                        (session_key, last + offset, *row_values(message))
                        for offset, message in enumerate(messages, start=1)
                    ],
                )
                await connection.execute(
                    SUMMARIZE,
                    session_key,
                    origin.agent_id,
                    title_of(messages),
                    time.time(),
                    origin.owner,
                    origin.one_off,
                )
                if origin.compaction is not None:
                    await connection.execute(
                        INSERT_COMPACTION, session_key, *_compaction_values(origin.compaction)
                    )
                if origin.usage:
                    await connection.executemany(
                        _INSERT_USAGE,
                        usage_rows(
                            origin.run_id,
                            session_key,
                            origin.owner,
                            origin.agent_id,
                            origin.usage,
                            time.time(),
                        ),
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
        with store_errors("finding the response"):
            row = await self.pool.fetchrow(
                f"SELECT r.session_key, r.agent_id, COALESCE(s.owner, '') FROM {RESPONSES_TABLE} r"
                f" LEFT JOIN {SESSIONS_TABLE} s ON s.session_key = r.session_key"
                " WHERE r.response_id = $1",
                response_id,
            )
        return None if row is None else StoredResponse(row[0], row[1], row[2])

    async def owner_of(self, session_key: str) -> str | None:
        with store_errors("reading the session's owner"):
            owner = await self.pool.fetchval(
                f"SELECT owner FROM {SESSIONS_TABLE} WHERE session_key = $1", session_key
            )
        return None if owner is None else str(owner)

    async def record_usage(
        self, request_id: str, identity: str, agent_id: str, calls: Sequence[ModelUsage]
    ) -> None:
        rows = usage_rows(request_id, "", identity, agent_id, calls, time.time())
        with store_errors("storing the usage"):
            await self.pool.executemany(_INSERT_USAGE, rows)

    async def usage(self, query: UsageQuery) -> list[UsageSums]:
        sql = usage_select(USAGE_TABLE, query, POSTGRES_DAY, "${}")
        with store_errors("summing the usage"):
            rows = await self.pool.fetch(sql, *usage_values(query))
        return [sums for sums in map(usage_sums, rows) if sums.requests]

    async def list_sessions(
        self,
        agent_id: str,
        limit: int,
        after: tuple[float, str] | None,
        owner: str | None = None,
        include_one_off: bool = False,
    ) -> list[SessionSummary]:
        conditions: list[str] = []
        values: list[object] = []
        if not include_one_off:  # see SessionStore.list_sessions
            conditions.append("NOT one_off")
        if agent_id:
            values.append(agent_id)
            conditions.append(f"agent_id = ${len(values)}")
        if owner is not None:
            values.append(owner)
            conditions.append(f"owner = ${len(values)}")
        if after is not None:
            values += [after[0], after[1]]
            conditions.append(f"(updated_at, session_key) < (${len(values) - 1}, ${len(values)})")
        values.append(limit)
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        with store_errors("listing the sessions"):
            rows = await self.pool.fetch(
                "SELECT session_key, agent_id, title, turns, updated_at, owner"
                f" FROM {SESSIONS_TABLE} {where}"
                f" ORDER BY updated_at DESC, session_key DESC LIMIT ${len(values)}",
                *values,
            )
        return [SessionSummary(*row) for row in rows]

    async def delete(self, session_key: str) -> bool:
        with store_errors("deleting the session"):
            async with self.pool.acquire() as connection, connection.transaction():
                result = await connection.execute(
                    f"DELETE FROM {MESSAGES_TABLE} WHERE session_key = $1", session_key
                )
                for table in (SESSIONS_TABLE, RESPONSES_TABLE, COMPACTIONS_TABLE, RUNS_TABLE):
                    await connection.execute(
                        f"DELETE FROM {table} WHERE session_key = $1", session_key
                    )
        return bool(result != "DELETE 0")


def _compaction_values(compaction: Compaction) -> tuple[int, str, int, int, float]:
    return (
        compaction.covers,
        compaction.summary,
        compaction.tokens_before,
        compaction.tokens_after,
        compaction.created_at or time.time(),
    )
