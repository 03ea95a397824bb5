"""The SQLite store's tables, their migrations and its writes, shared by the loop's
connection and the thread's (its reads are in sqlite_reads.py)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from agent_worker.domain import ChatMessage, Compaction
from agent_worker.sessions.records import (
    MESSAGE_COLUMNS,
    row_values,
    usage_insert,
    usage_rows,
)
from agent_worker.sessions.store import NO_ORIGIN, TurnOrigin, title_of

BUSY_TIMEOUT_SECONDS = 10.0


USAGE_TABLE = "usage_records"
INSERT_USAGE = usage_insert(USAGE_TABLE, "?")


class StaleTurnError(sqlite3.DatabaseError):
    """The session grew after the turn read it: its messages and compaction would not follow
    what its model saw. Workers sharing one file never interleave a session's turns."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS session_messages (
    session_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    tool_calls TEXT,
    tool_call_id TEXT,
    name TEXT,
    reasoning TEXT,
    PRIMARY KEY (session_key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    session_key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    title TEXT NOT NULL,
    turns INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_update ON sessions (updated_at, session_key);
CREATE INDEX IF NOT EXISTS sessions_by_agent ON sessions (agent_id, updated_at, session_key);
CREATE TABLE IF NOT EXISTS session_compactions (
    session_key TEXT NOT NULL,
    covers INTEGER NOT NULL,
    summary TEXT NOT NULL,
    tokens_before INTEGER NOT NULL,
    tokens_after INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_key, covers)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_records (
    request_id TEXT NOT NULL,
    session_key TEXT NOT NULL,
    call INTEGER NOT NULL,
    identity TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost_usd REAL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage_records (created_at);
CREATE INDEX IF NOT EXISTS usage_by_identity ON usage_records (identity, created_at);
CREATE TABLE IF NOT EXISTS responses (
    response_id TEXT PRIMARY KEY,
    session_key TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    replay_key TEXT UNIQUE,
    status TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    session_key TEXT NOT NULL,
    hook TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    error TEXT NOT NULL,
    answer TEXT NOT NULL,
    holder TEXT NOT NULL,
    alive_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session_key, created_at);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (status, alive_at);
"""
# Columns added since the first schema, by table: a file written before them gains them on
# open. Sessions stored before owners were recorded belong to the gateway's owner ('').
_ADDED_COLUMNS = {
    "session_messages": {
        "tool_calls": "TEXT",
        "tool_call_id": "TEXT",
        "name": "TEXT",
        "reasoning": "TEXT",
    },
    "sessions": {"owner": "TEXT NOT NULL DEFAULT ''", "one_off": "INTEGER NOT NULL DEFAULT 0"},
}
# Sessions stored before `one_off` are known by the form of the keys the edge makes up for one
# call (gateway_edge/sessions.py); from then on the turn says so.
_BACKFILL_ONE_OFF = """
UPDATE sessions SET one_off = 1
WHERE turns <= 1
  AND substr(session_key, 1, length(agent_id) + 14) = 'agent:' || agent_id || ':openai:'
"""
_OWNER_INDEX = (
    "CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (owner, updated_at, session_key)"
)


def switch_to_wal(connection: sqlite3.Connection) -> None:
    """Workers sharing a new file switch it to WAL while another may hold its lock; SQLite
    answers that at once with 'database is locked' (its busy handler would deadlock), so retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# Sessions written before the summary table get one, from their messages.
_BACKFILL_SESSIONS = """
INSERT OR IGNORE INTO sessions (session_key, agent_id, title, turns, updated_at)
SELECT m.session_key, '',
       COALESCE((SELECT substr(first.content, 1, 80) FROM session_messages first
                 WHERE first.session_key = m.session_key AND first.role = 'user'
                 ORDER BY first.seq LIMIT 1), ''),
       SUM(m.role = 'user'), MAX(m.created_at)
FROM session_messages m GROUP BY m.session_key
"""
_SUMMARIZE = """
INSERT INTO sessions (session_key, agent_id, title, turns, updated_at, owner, one_off)
VALUES (?, ?, ?, 1, ?, ?, ?)
ON CONFLICT (session_key) DO UPDATE SET
    turns = turns + 1,
    one_off = 0,
    updated_at = excluded.updated_at,
    agent_id = CASE WHEN agent_id = '' THEN excluded.agent_id ELSE agent_id END,
    title = CASE WHEN title = '' THEN excluded.title ELSE title END
"""


def insert_turn(
    connection: sqlite3.Connection,
    session_key: str,
    messages: Sequence[ChatMessage],
    now: float,
    origin: TurnOrigin = NO_ORIGIN,
) -> None:
    (last,) = connection.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM session_messages WHERE session_key = ?",
        (session_key,),
    ).fetchone()
    if origin.expected_length is not None and last != origin.expected_length:
        raise StaleTurnError(
            "another turn of this session was stored while this one ran (on another worker);"
            " this turn was not stored: send it again"
        )
    connection.executemany(
        "INSERT INTO session_messages"
        f" (session_key, seq, created_at, {MESSAGE_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (session_key, last + offset, now, *row_values(message))
            for offset, message in enumerate(messages, start=1)
        ],
    )
    connection.execute(
        _SUMMARIZE,
        (session_key, origin.agent_id, title_of(messages), now, origin.owner, origin.one_off),
    )
    if origin.compaction is not None:
        insert_compaction(connection, session_key, origin.compaction, now)
    if origin.usage:
        connection.executemany(
            INSERT_USAGE,
            usage_rows(
                origin.run_id, session_key, origin.owner, origin.agent_id, origin.usage, now
            ),
        )
    if origin.response_id:
        connection.execute(
            "INSERT INTO responses (response_id, session_key, agent_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            (origin.response_id, session_key, origin.agent_id, now),
        )


def insert_compaction(
    connection: sqlite3.Connection, session_key: str, compaction: Compaction, now: float
) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO session_compactions"
        " (session_key, covers, summary, tokens_before, tokens_after, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            session_key,
            compaction.covers,
            compaction.summary,
            compaction.tokens_before,
            compaction.tokens_after,
            compaction.created_at or now,
        ),
    )


def create_or_migrate(connection: sqlite3.Connection) -> None:
    had_sessions = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sessions'"
    ).fetchone()
    connection.executescript(SCHEMA)
    for table, added in _ADDED_COLUMNS.items():
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        for column, kind in added.items():
            if column not in columns:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                if column == "one_off" and had_sessions:
                    connection.execute(_BACKFILL_ONE_OFF)
    connection.execute(_OWNER_INDEX)
    if not had_sessions:
        with connection:
            connection.execute(_BACKFILL_SESSIONS)


def make_private(path: Path) -> None:
    """Transcripts are for their owner: a new folder is 0700 and a new file 0600 (SQLite gives
    the WAL and shared-memory files the database file's mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def checkpoint_wal(connection: sqlite3.Connection) -> None:
    """Copies the WAL into the database file without waiting for anyone (PASSIVE), so that the
    WAL can start over instead of growing (see SqliteSessionStore._start_checkpoint); the size
    limit gives the file back once it does."""
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
