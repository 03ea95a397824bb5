"""The embedded default store: one SQLite file in WAL mode.

Finished turns are committed on the event loop, in the step after they finish, when the file's
write lock is free: turns that finish in the same step share the commit (about four a step in
the pair under load, which cut a turn's write from ~99 to ~54 us of CPU). With WAL and
`synchronous=NORMAL` a commit appends to the WAL in the page cache and never waits for the disk,
and it costs less than the hop to a thread and back: that hop made each turn's last event a
message of its own and added milliseconds under load (measured in docs/performance.md). What can
wait stays off the loop, on one thread with its own connection:
reads, checkpoints (they sync the disk) and any turn that found the lock held by another
connection (another worker on the same file); turns queued there together share a transaction.
A large turn (over LOOP_COMMIT_BYTES of text) always goes to the thread: its commit would
hold the loop, and every other turn of the worker with it, for seconds.

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
from agent_worker.sessions.sqlite_schema import (
    BUSY_TIMEOUT_SECONDS,
    INSERT_USAGE,
    SCHEMA,
    USAGE_TABLE,
    checkpoint_wal,
    create_or_migrate,
    insert_compaction,
    make_private,
    read_compactions,
    read_context,
    read_owner,
    read_response,
    read_sessions,
    switch_to_wal,
)
from agent_worker.sessions.sqlite_writes import (
    UnwrittenTurn,
    fits_a_loop_commit,
    is_busy_error,
    settle,
    settle_from_thread,
    store_error,
    write_turns,
)
from agent_worker.sessions.store import NO_ORIGIN, TurnOrigin
from agent_worker.usage import ModelUsage, UsageQuery, UsageSums

log = logging.getLogger("clawgate.worker.sessions")

T = TypeVar("T")
# Commits on the loop between checkpoints on the thread; SQLite's own default is a checkpoint
# per 1,000 WAL pages, and a turn writes one to three.
CHECKPOINT_EVERY = 400
WAL_SIZE_LIMIT = 16 << 20  # what the WAL file is cut back to when it starts over


class SqliteSessionStore:
    system = "sqlite"

    def __init__(self, path: Path | str, checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._connection: sqlite3.Connection | None = None  # the thread's
        self._loop_connection: sqlite3.Connection | None = None
        self._unwritten: list[UnwrittenTurn] = []  # for the thread
        self._loop_group: list[UnwrittenTurn] = []  # for the loop's next commit
        self._checkpoint_every = checkpoint_every
        self._commits_since_checkpoint = 0
        self.checkpoint: asyncio.Future[None] | None = None  # the one running, if any
        self._checkpoint_holds_turns = False  # whether the loop's turns queue for it

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        connection = self._connection
        if connection is None:
            raise RuntimeError("the session store is not open")
        return asyncio.get_running_loop().run_in_executor(self._executor, work, connection)

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
            self._loop_connection = loop_connection

    async def close(self) -> None:
        self._commit_loop_group()  # turns that finished just now are stored, not dropped
        while self.checkpoint is not None:  # a first step starts the second when it ends
            await asyncio.gather(self.checkpoint, return_exceptions=True)
        if self._loop_connection is not None:
            self._loop_connection.close()
            self._loop_connection = None
        if self._connection is not None:
            await self._run(lambda connection: connection.close())
            self._connection = None
        self._executor.shutdown(wait=True)

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

        try:
            return await self._run(read)
        except sqlite3.Error as error:
            raise store_error(error, "reading the session") from None

    def append_turn(
        self,
        session_key: str,
        messages: Sequence[ChatMessage],
        origin: TurnOrigin = NO_ORIGIN,
    ) -> asyncio.Future[None]:
        """Stores a whole turn or nothing; the future tells how it went. Turns that finish in
        the same loop step share one commit, on the loop when the write lock is free, else on
        the thread."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        turn = (session_key, messages, done, origin)
        if self._loop_connection is not None and fits_a_loop_commit(messages):
            self._loop_group.append(turn)
            if len(self._loop_group) == 1:
                loop.call_soon(self._commit_loop_group)
        else:
            self._queue_for_thread([turn])
        return done

    def _commit_loop_group(self) -> None:
        """One transaction for the turns that finished in the last loop step (a commit writes
        each page it touched once: see the module's docstring). Turns that found the write lock
        held go to the thread."""
        turns, self._loop_group = self._loop_group, []
        if not turns:
            return
        if self._loop_connection is None or self._checkpoint_holds_turns:
            self._queue_for_thread(turns)
            return
        errors: Sequence[BaseException | None]
        try:
            errors = write_turns(self._loop_connection, turns)
        except sqlite3.Error as failure:  # a group of one
            errors = [failure]
        busy: list[UnwrittenTurn] = []
        for turn, error in zip(turns, errors, strict=True):
            if is_busy_error(error):
                busy.append(turn)  # another connection writes: the thread waits for the lock
            else:
                settle([turn], [error])
        if busy:
            self._queue_for_thread(busy)
        if len(busy) < len(turns):
            self._count_commit()

    def _queue_for_thread(self, turns: Sequence[UnwrittenTurn]) -> None:
        self._unwritten += turns
        if len(self._unwritten) == len(turns):  # turns queued in this loop step share one
            asyncio.get_running_loop().call_soon(self._write_unwritten)

    def _count_commit(self) -> None:
        self._commits_since_checkpoint += 1
        if self._commits_since_checkpoint < self._checkpoint_every or self.checkpoint is not None:
            return
        self._commits_since_checkpoint = 0
        self._start_checkpoint(holds_turns=False)

    def _start_checkpoint(self, holds_turns: bool) -> None:
        """Two steps: the bulk copy while the loop keeps committing (it cannot complete: what
        is committed meanwhile stays uncopied, and the WAL cannot start over), then a short copy
        of just that while finishing turns queue for the thread; then the WAL starts over.
        Holding turns for the whole copy tripled the pair's p99 (docs/performance.md)."""
        self._checkpoint_holds_turns = holds_turns
        checkpoint = self._run(checkpoint_wal)
        checkpoint.add_done_callback(self._checkpointed)
        self.checkpoint = checkpoint

    def _checkpointed(self, checkpoint: asyncio.Future[None]) -> None:
        held_turns, self._checkpoint_holds_turns = self._checkpoint_holds_turns, False
        self.checkpoint = None
        if not checkpoint.cancelled() and (error := checkpoint.exception()) is not None:
            log.warning("sqlite checkpoint failed (the next one retries): %s", error)
        elif not held_turns and not checkpoint.cancelled() and self._loop_connection is not None:
            self._start_checkpoint(holds_turns=True)

    def _write_unwritten(self) -> None:
        turns, self._unwritten = self._unwritten, []
        if not turns:
            return
        try:
            written = self._run(lambda connection: write_turns(connection, turns))
        except RuntimeError as error:  # closed meanwhile
            written = asyncio.get_running_loop().create_future()
            written.set_exception(error)  # every waiting turn gets this error
        written.add_done_callback(lambda outcome: settle_from_thread(turns, outcome))
        written.add_done_callback(lambda _: self._count_commit())  # they count as well

    async def load_context(self, session_key: str, limit: int | None = None) -> StoredContext:
        try:
            return await self._run(lambda connection: read_context(connection, session_key, limit))
        except sqlite3.Error as error:
            raise store_error(error, "reading the session") from None

    async def compactions(self, session_key: str) -> list[Compaction]:
        try:
            return await self._run(lambda connection: read_compactions(connection, session_key))
        except sqlite3.Error as error:
            raise store_error(error, "reading the session's compactions") from None

    async def add_compaction(self, session_key: str, compaction: Compaction) -> None:
        def add(connection: sqlite3.Connection) -> None:
            with connection:
                insert_compaction(connection, session_key, compaction, time.time())

        try:
            await self._run(add)
        except sqlite3.Error as error:
            raise store_error(error, "storing the compaction") from None

    async def find_response(self, response_id: str) -> StoredResponse | None:
        try:
            return await self._run(lambda connection: read_response(connection, response_id))
        except sqlite3.Error as error:
            raise store_error(error, "finding the response") from None

    async def owner_of(self, session_key: str) -> str | None:
        try:
            return await self._run(lambda connection: read_owner(connection, session_key))
        except sqlite3.Error as error:
            raise store_error(error, "reading the session's owner") from None

    async def list_sessions(
        self,
        agent_id: str,
        limit: int,
        after: tuple[float, str] | None,
        owner: str | None = None,
        include_one_off: bool = False,
    ) -> list[SessionSummary]:
        try:
            return await self._run(
                lambda connection: read_sessions(
                    connection, agent_id, limit, after, owner, include_one_off
                )
            )
        except sqlite3.Error as error:
            raise store_error(error, "listing the sessions") from None

    async def record_usage(
        self, request_id: str, identity: str, agent_id: str, calls: Sequence[ModelUsage]
    ) -> None:
        rows = usage_rows(request_id, "", identity, agent_id, calls, time.time())

        def add(connection: sqlite3.Connection) -> None:
            with connection:
                connection.executemany(INSERT_USAGE, rows)

        try:
            await self._run(add)
        except sqlite3.Error as error:
            raise store_error(error, "storing the usage") from None

    async def usage(self, query: UsageQuery) -> list[UsageSums]:
        sql = usage_select(USAGE_TABLE, query, SQLITE_DAY, "?")

        def read(connection: sqlite3.Connection) -> list[UsageSums]:
            rows = connection.execute(sql, usage_values(query)).fetchall()
            return [sums for sums in map(usage_sums, rows) if sums.requests]

        try:
            return await self._run(read)
        except sqlite3.Error as error:
            raise store_error(error, "summing the usage") from None

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
            return cursor.rowcount > 0

        try:
            return await self._run(remove)
        except sqlite3.Error as error:
            raise store_error(error, "deleting the session") from None
