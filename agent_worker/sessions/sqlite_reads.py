"""The SQLite store's reads: what a turn sees of its session, its compactions, a stored
response, a session's owner and the listing of sessions. Each runs on the store's thread."""

from __future__ import annotations

import sqlite3

from agent_worker.domain import Compaction, SessionSummary, StoredContext, StoredResponse
from agent_worker.sessions.records import COMPACTION_COLUMNS, MESSAGE_COLUMNS, message_of


def read_context(
    connection: sqlite3.Connection, session_key: str, limit: int | None
) -> StoredContext:
    row = connection.execute(
        f"SELECT {COMPACTION_COLUMNS} FROM session_compactions WHERE session_key = ?"
        " ORDER BY covers DESC LIMIT 1",
        (session_key,),
    ).fetchone()
    compaction = None if row is None else Compaction(*row)
    covers = compaction.covers if compaction else 0
    rows = connection.execute(
        f"SELECT seq, {MESSAGE_COLUMNS} FROM session_messages"
        " WHERE session_key = ? AND seq > ? ORDER BY seq DESC LIMIT ?",
        (session_key, covers, -1 if limit is None else limit),
    ).fetchall()
    rows.reverse()
    first = rows[0][0] - 1 if rows else covers
    return StoredContext([message_of(*row[1:]) for row in rows], first, compaction)


def read_compactions(connection: sqlite3.Connection, session_key: str) -> list[Compaction]:
    rows = connection.execute(
        f"SELECT {COMPACTION_COLUMNS} FROM session_compactions WHERE session_key = ?"
        " ORDER BY covers",
        (session_key,),
    ).fetchall()
    return [Compaction(*row) for row in rows]


def read_response(connection: sqlite3.Connection, response_id: str) -> StoredResponse | None:
    row = connection.execute(
        "SELECT r.session_key, r.agent_id, COALESCE(s.owner, '') FROM responses r"
        " LEFT JOIN sessions s ON s.session_key = r.session_key WHERE r.response_id = ?",
        (response_id,),
    ).fetchone()
    return None if row is None else StoredResponse(*row)


def read_owner(connection: sqlite3.Connection, session_key: str) -> str | None:
    row = connection.execute(
        "SELECT owner FROM sessions WHERE session_key = ?", (session_key,)
    ).fetchone()
    return None if row is None else str(row[0])


def read_sessions(
    connection: sqlite3.Connection,
    agent_id: str,
    limit: int,
    after: tuple[float, str] | None,
    owner: str | None,
    include_one_off: bool = False,
) -> list[SessionSummary]:
    """Newest first, after the cursor (updated_at, session_key) of a previous page."""
    where, values = _listing_filter(agent_id, after, owner, include_one_off)
    rows = connection.execute(
        "SELECT session_key, agent_id, title, turns, updated_at, owner FROM sessions"
        f" {where} ORDER BY updated_at DESC, session_key DESC LIMIT ?",
        (*values, limit),
    ).fetchall()
    return [SessionSummary(*row) for row in rows]


def _listing_filter(
    agent_id: str, after: tuple[float, str] | None, owner: str | None, include_one_off: bool
) -> tuple[str, tuple[object, ...]]:
    conditions: list[str] = []
    values: list[object] = []
    if not include_one_off:
        conditions.append("NOT one_off")
    if agent_id:
        conditions.append("agent_id = ?")
        values.append(agent_id)
    if owner is not None:
        conditions.append("owner = ?")
        values.append(owner)
    if after is not None:
        conditions.append("(updated_at < ? OR (updated_at = ? AND session_key < ?))")
        values += [after[0], after[0], after[1]]
    return ("WHERE " + " AND ".join(conditions) if conditions else ""), tuple(values)
