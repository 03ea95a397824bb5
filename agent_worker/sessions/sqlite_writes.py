"""The SQLite store's writes of finished turns: a group in one transaction, each turn failing
alone if the group cannot be written, and each turn told how its write went."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence

from agent_worker.domain import ChatMessage
from agent_worker.errors import SessionStoreError
from agent_worker.sessions.sqlite_schema import StaleTurnError, insert_turn
from agent_worker.sessions.store import TurnOrigin

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
