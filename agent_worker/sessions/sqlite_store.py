"""The embedded default store: one SQLite file in WAL mode.

Finished turns are committed on the event loop when the file's write lock is free, turns that
finish in the same loop step sharing one commit; everything that can wait (reads, checkpoints,
large turns, turns that found the lock held) runs on one thread with its own connection
(sqlite_writes.TurnCommits says which goes where, and why).

The turn runner serializes sessions within this process; workers that share the file
(`clawgate up --workers N`) keep each session on one worker through the edge's session
affinity, and the edge moves a session only when its worker is unreachable or draining. Should
two workers still run turns of one session at once, the later write finds the session longer
than its turn read it and is refused whole (StaleTurnError): turns never interleave. Use
PostgreSQL when workers must fail over under load. Every sqlite3 error leaves this module as
SessionStoreError.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import TypeVar

from agent_worker.domain import (
    ChatMessage,
    Compaction,
    SessionSummary,
    StoredContext,
    StoredResponse,
)
from agent_worker.sessions.records import (
    MESSAGE_COLUMNS,
    SQLITE_DAY,
    message_of,
    usage_rows,
    usage_select,
    usage_sums,
    usage_values,
)
from agent_worker.sessions.sqlite_reads import (
    read_compactions,
    read_context,
    read_owner,
    read_response,
    read_sessions,
)
from agent_worker.sessions.sqlite_runs import SqliteRuns
from agent_worker.sessions.sqlite_schema import (
    BUSY_TIMEOUT_SECONDS,
    INSERT_USAGE,
    SCHEMA,
    USAGE_TABLE,
    create_or_migrate,
    insert_compaction,
    make_private,
    switch_to_wal,
)
from agent_worker.sessions.sqlite_writes import TurnCommits, store_error
from agent_worker.sessions.store import NO_ORIGIN, TurnOrigin
from agent_worker.usage import ModelUsage, UsageQuery, UsageSums

log = logging.getLogger("clawgate.worker.sessions")

T = TypeVar("T")
# Commits on the loop between checkpoints on the thread; SQLite's own default is a checkpoint
# per 1,000 WAL pages, and a turn writes one to three.
CHECKPOINT_EVERY = 400
WAL_SIZE_LIMIT = 16 << 20  # what the WAL file is cut back to when it starts over


class SqliteSessionStore(SqliteRuns):
    system = "sqlite"

    def __init__(self, path: Path | str, checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._connection: sqlite3.Connection | None = None  # the thread's
        self._commits = TurnCommits(self._run, checkpoint_every)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        connection = self._connection
        if connection is None:
            raise RuntimeError("the session store is not open")
        return asyncio.get_running_loop().run_in_executor(self._executor, work, connection)

    async def _call(self, work: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """`work` on the thread; a sqlite3 error is a SessionStoreError saying what failed."""
        try:
            return await self._run(work)
        except sqlite3.Error as error:
            raise store_error(error, doing) from None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            if isinstance(self._path, Path):
                make_private(self._path)
            connection = sqlite3.connect(
                str(self._path),
                timeout=BUSY_TIMEOUT_SECONDS,
                check_same_thread=False,
                isolation_level=None,
            )
            switch_to_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            create_or_migrate(connection)
            return connection

        self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        if self._path != ":memory:":  # a second connection would open a database of its own
            # Never waits for the lock (timeout 0) and never checkpoints: both go to the thread.
            loop_connection = sqlite3.connect(str(self._path), timeout=0, isolation_level=None)
            loop_connection.execute("PRAGMA synchronous=NORMAL")
            loop_connection.execute("PRAGMA wal_autocheckpoint=0")
            self._commits.loop_connection = loop_connection

    async def close(self) -> None:
        await self._commits.close()
        if self._connection is not None:
            await self._run(lambda connection: connection.close())
            self._connection = None
        self._executor.shutdown(wait=True)

    @property
    def checkpoint(self) -> asyncio.Future[None] | None:
        """The WAL checkpoint running, if any."""
        return self._commits.checkpoint

    def session_lock(
        self, session_key: str, wait_seconds: float
    ) -> AbstractAsyncContextManager[None]:
        return nullcontext()  # one process: the turn runner's own per-session order is enough

    async def ping(self) -> bool:
        """Whether the file answers with its table in place (made again if it vanished)."""
        try:
            await self._run(lambda connection: connection.executescript(SCHEMA))
        except (sqlite3.Error, RuntimeError) as error:
            log.warning("session store check failed: %s", error)
            return False
        return True

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        def read(connection: sqlite3.Connection) -> list[ChatMessage]:
            rows = connection.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM session_messages"
                " WHERE session_key = ? ORDER BY seq DESC LIMIT ?",
                (session_key, -1 if limit is None else limit),
            ).fetchall()
            return [message_of(*row) for row in reversed(rows)]

        return await self._call(read, "reading the session")

    def append_turn(
        self,
        session_key: str,
        messages: Sequence[ChatMessage],
        origin: TurnOrigin = NO_ORIGIN,
    ) -> asyncio.Future[None]:
        """Stores a whole turn or nothing; the future tells how it went (see TurnCommits)."""
        return self._commits.append(session_key, messages, origin)

    async def load_context(self, session_key: str, limit: int | None = None) -> StoredContext:
        return await self._call(
            lambda connection: read_context(connection, session_key, limit), "reading the session"
        )

    async def compactions(self, session_key: str) -> list[Compaction]:
        return await self._call(
            lambda connection: read_compactions(connection, session_key),
            "reading the session's compactions",
        )

    async def add_compaction(self, session_key: str, compaction: Compaction) -> None:
        def add(connection: sqlite3.Connection) -> None:
            with connection:
                insert_compaction(connection, session_key, compaction, time.time())

        await self._call(add, "storing the compaction")

    async def find_response(self, response_id: str) -> StoredResponse | None:
        return await self._call(
            lambda connection: read_response(connection, response_id), "finding the response"
        )

    async def owner_of(self, session_key: str) -> str | None:
        return await self._call(
            lambda connection: read_owner(connection, session_key), "reading the session's owner"
        )

    async def list_sessions(
        self,
        agent_id: str,
        limit: int,
        after: tuple[float, str] | None,
        owner: str | None = None,
        include_one_off: bool = False,
    ) -> list[SessionSummary]:
        return await self._call(
            lambda connection: read_sessions(
                connection, agent_id, limit, after, owner, include_one_off
            ),
            "listing the sessions",
        )

    async def record_usage(
        self, request_id: str, identity: str, agent_id: str, calls: Sequence[ModelUsage]
    ) -> None:
        rows = usage_rows(request_id, "", identity, agent_id, calls, time.time())

        def add(connection: sqlite3.Connection) -> None:
            with connection:
                connection.executemany(INSERT_USAGE, rows)

        await self._call(add, "storing the usage")

    async def usage(self, query: UsageQuery) -> list[UsageSums]:
        sql = usage_select(USAGE_TABLE, query, SQLITE_DAY, "?")

        def read(connection: sqlite3.Connection) -> list[UsageSums]:
            rows = connection.execute(sql, usage_values(query)).fetchall()
            return [sums for sums in map(usage_sums, rows) if sums.requests]

        return await self._call(read, "summing the usage")

    async def delete(self, session_key: str) -> bool:
        def remove(connection: sqlite3.Connection) -> bool:
            with connection:
                cursor = connection.execute(
                    "DELETE FROM session_messages WHERE session_key = ?", (session_key,)
                )
                connection.execute("DELETE FROM sessions WHERE session_key = ?", (session_key,))
                connection.execute(
                    "DELETE FROM session_compactions WHERE session_key = ?", (session_key,)
                )
                connection.execute("DELETE FROM responses WHERE session_key = ?", (session_key,))
                connection.execute("DELETE FROM runs WHERE session_key = ?", (session_key,))
            return cursor.rowcount > 0

        return await self._call(remove, "deleting the session")
