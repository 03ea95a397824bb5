"""The SQLite store's writes of finished turns: when and where they are committed (`TurnCommits`),
a group in one transaction, each turn failing alone if the group cannot be written, and each
turn told how its write went."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from agent_worker.domain import ChatMessage
from agent_worker.errors import SessionStoreError
from agent_worker.sessions.sqlite_schema import StaleTurnError, checkpoint_wal, insert_turn
from agent_worker.sessions.store import TurnOrigin

log = logging.getLogger("clawgate.worker.sessions")
T = TypeVar("T")


class OnThread(Protocol):
    """Runs work on the store's thread, with that thread's connection."""

    def __call__(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]: ...


# The most text a turn may have for its commit to run on the event loop (about 30 us per KiB).
LOOP_COMMIT_BYTES = 64 * 1024


def fits_a_loop_commit(messages: Sequence[ChatMessage]) -> bool:
    size = 0
    for message in messages:
        size += len(message.text) + sum(len(call.arguments) for call in message.tool_calls)
        if size > LOOP_COMMIT_BYTES:
            return False
    return True


# A turn waiting for its write: session key, messages, the future it waits on, its origin.
UnwrittenTurn = tuple[str, Sequence[ChatMessage], "asyncio.Future[None]", TurnOrigin]


def store_error(error: BaseException, doing: str) -> SessionStoreError:
    if isinstance(error, StaleTurnError):
        return SessionStoreError(str(error))
    return SessionStoreError(f"the session store (SQLite) failed while {doing}: {error}")


def is_busy_error(error: BaseException | None) -> bool:
    code: int = getattr(error, "sqlite_errorcode", 0)
    return code & 0xFF == sqlite3.SQLITE_BUSY  # extended codes (BUSY_RECOVERY, …) included


def write_turns(
    connection: sqlite3.Connection, turns: Sequence[UnwrittenTurn]
) -> list[Exception | None]:
    """One transaction for the group; if it fails, each turn alone, so that one bad turn
    fails only itself. Returns each turn's error (None when stored)."""
    now = time.time()
    try:
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            for session_key, messages, _, origin in turns:
                insert_turn(connection, session_key, messages, now, origin)
        return [None] * len(turns)
    except sqlite3.Error:
        if len(turns) == 1:
            raise
    errors: list[Exception | None] = []
    for session_key, messages, _, origin in turns:
        try:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                insert_turn(connection, session_key, messages, now, origin)
            errors.append(None)
        except sqlite3.Error as error:
            errors.append(error)
    return errors


def settle(turns: Sequence[UnwrittenTurn], errors: Sequence[BaseException | None]) -> None:
    """Tells each turn how its write went (None: stored); a turn nobody waits for is skipped."""
    for (_, _, done, _), error in zip(turns, errors, strict=True):
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        elif isinstance(error, asyncio.CancelledError):
            done.set_exception(error)
        else:
            done.set_exception(store_error(error, "writing the turn"))


def settle_from_thread(
    turns: Sequence[UnwrittenTurn], outcome: asyncio.Future[list[Exception | None]]
) -> None:
    if outcome.cancelled():
        settle(turns, [asyncio.CancelledError()] * len(turns))
    elif (failure := outcome.exception()) is not None:
        settle(turns, [failure] * len(turns))
    else:
        settle(turns, outcome.result())


class TurnCommits:
    """Commits finished turns on the event loop when the write lock is free (with WAL and
    synchronous=NORMAL a commit appends to the page cache and never waits for the disk, and it
    costs less than a hop to a thread); the rest goes to the store's thread: large turns (their
    commit would hold the loop), turns that found the lock held by another connection (another
    worker on the same file), and every `checkpoint_every` commits, a WAL checkpoint."""

    def __init__(self, on_thread: OnThread, checkpoint_every: int) -> None:
        self._run = on_thread
        # Set once the file is open; none for an in-memory store (everything on the thread).
        self.loop_connection: sqlite3.Connection | None = None
        self._unwritten: list[UnwrittenTurn] = []  # for the thread
        self._loop_group: list[UnwrittenTurn] = []  # for the loop's next commit
        self._checkpoint_every = checkpoint_every
        self._commits_since_checkpoint = 0
        self.checkpoint: asyncio.Future[None] | None = None  # the one running, if any
        self._checkpoint_holds_turns = False  # whether the loop's turns queue for it

    async def close(self) -> None:
        self._commit_loop_group()  # turns that finished just now are stored, not dropped
        while self.checkpoint is not None:  # a first step starts the second when it ends
            await asyncio.gather(self.checkpoint, return_exceptions=True)
        if self.loop_connection is not None:
            self.loop_connection.close()
            self.loop_connection = None

    def append(
        self, session_key: str, messages: Sequence[ChatMessage], origin: TurnOrigin
    ) -> asyncio.Future[None]:
        """Queues a whole turn; the future tells how its write went. Turns that finish in the
        same loop step share one commit, on the loop when the write lock is free, else on the
        thread."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        turn = (session_key, messages, done, origin)
        if self.loop_connection is not None and fits_a_loop_commit(messages):
            self._loop_group.append(turn)
            if len(self._loop_group) == 1:
                loop.call_soon(self._commit_loop_group)
        else:
            self._queue_for_thread([turn])
        return done

    def _commit_loop_group(self) -> None:
        """One transaction for the turns that finished in the last loop step (a commit writes
        each page it touched once). Turns that found the write lock
        held go to the thread."""
        turns, self._loop_group = self._loop_group, []
        if not turns:
            return
        if self.loop_connection is None or self._checkpoint_holds_turns:
            self._queue_for_thread(turns)
            return
        errors: Sequence[BaseException | None]
        try:
            errors = write_turns(self.loop_connection, turns)
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
        Turns are held for the short copy only: a whole copy's wait is seen in every turn's
        latency."""
        self._checkpoint_holds_turns = holds_turns
        checkpoint = self._run(checkpoint_wal)
        checkpoint.add_done_callback(self._checkpointed)
        self.checkpoint = checkpoint

    def _checkpointed(self, checkpoint: asyncio.Future[None]) -> None:
        held_turns, self._checkpoint_holds_turns = self._checkpoint_holds_turns, False
        self.checkpoint = None
        if not checkpoint.cancelled() and (error := checkpoint.exception()) is not None:
            log.warning("sqlite checkpoint failed (the next one retries): %s", error)
        elif not held_turns and not checkpoint.cancelled() and self.loop_connection is not None:
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
