"""The PostgreSQL store's tables and their migrations, numbered; one worker migrates at a time."""

from __future__ import annotations

from typing import Any

from agent_worker.sessions.records import COMPACTION_COLUMNS, MESSAGE_COLUMNS

SCHEMA_VERSION = 11
MESSAGES_TABLE = "clawgate_session_messages"
RESPONSES_TABLE = "clawgate_responses"
SESSIONS_TABLE = "clawgate_sessions"
LEASES_TABLE = "clawgate_session_leases"
COMPACTIONS_TABLE = "clawgate_session_compactions"
USAGE_TABLE = "clawgate_usage"
RUNS_TABLE = "clawgate_runs"
_MIGRATIONS = {
    1: f"""
    CREATE TABLE IF NOT EXISTS {MESSAGES_TABLE} (
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
    ALTER TABLE {MESSAGES_TABLE}
        ADD COLUMN IF NOT EXISTS tool_calls TEXT,
        ADD COLUMN IF NOT EXISTS tool_call_id TEXT,
        ADD COLUMN IF NOT EXISTS name TEXT;
    """,
    # Responses API ids, stored with their turn, so previous_response_id finds the session.
    3: f"""
    CREATE TABLE IF NOT EXISTS {RESPONSES_TABLE} (
        response_id TEXT PRIMARY KEY,
        session_key TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    """,
    # Each session's summary for listings (newest first, per agent), filled for sessions
    # written before it from their messages.
    4: f"""
    CREATE TABLE IF NOT EXISTS {SESSIONS_TABLE} (
        session_key TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        title TEXT NOT NULL,
        turns INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS clawgate_sessions_by_update
        ON {SESSIONS_TABLE} (updated_at, session_key);
    CREATE INDEX IF NOT EXISTS clawgate_sessions_by_agent
        ON {SESSIONS_TABLE} (agent_id, updated_at, session_key);
    INSERT INTO {SESSIONS_TABLE} (session_key, agent_id, title, turns, updated_at)
    SELECT m.session_key, '',
           COALESCE((SELECT left(f.content, 80) FROM {MESSAGES_TABLE} f
                     WHERE f.session_key = m.session_key AND f.role = 'user'
                     ORDER BY f.seq LIMIT 1), ''),
           count(*) FILTER (WHERE m.role = 'user'),
           extract(epoch FROM max(m.created_at))
    FROM {MESSAGES_TABLE} m GROUP BY m.session_key
    ON CONFLICT DO NOTHING;
    """,
    # Session leases (postgres_leases.py) in place of advisory locks held for a turn's length.
    # Unlogged: a lease means nothing after the server restarts, and its writes skip the WAL.
    5: f"""
    CREATE UNLOGGED TABLE IF NOT EXISTS {LEASES_TABLE} (
        session_key TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        holder_lock BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    """,
    # Compactions: a summary that stands for a session's first `covers` messages in prompts.
    6: f"""
    CREATE TABLE IF NOT EXISTS {COMPACTIONS_TABLE} (
        session_key TEXT NOT NULL,
        covers INTEGER NOT NULL,
        summary TEXT NOT NULL,
        tokens_before INTEGER NOT NULL,
        tokens_after INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (session_key, covers)
    );
    """,
    # Whose each session is: the identity whose turn made it; sessions made before belong to
    # the gateway's owner ('').
    7: f"""
    ALTER TABLE {SESSIONS_TABLE} ADD COLUMN IF NOT EXISTS owner TEXT NOT NULL DEFAULT '';
    CREATE INDEX IF NOT EXISTS clawgate_sessions_by_owner
        ON {SESSIONS_TABLE} (owner, updated_at, session_key);
    """,
    # An assistant's signed thinking (a JSON list), sent back when its tool loop continues.
    8: f"""
    ALTER TABLE {MESSAGES_TABLE} ADD COLUMN IF NOT EXISTS reasoning TEXT;
    """,
    # What each model call of a turn used and cost, written in the turn's transaction.
    9: f"""
    CREATE TABLE IF NOT EXISTS {USAGE_TABLE} (
        request_id TEXT NOT NULL,
        session_key TEXT NOT NULL,
        call INTEGER NOT NULL,
        identity TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cache_read_tokens BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        estimated BOOLEAN NOT NULL,
        cost_usd DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS clawgate_usage_by_time ON {USAGE_TABLE} (created_at);
    CREATE INDEX IF NOT EXISTS clawgate_usage_by_identity ON {USAGE_TABLE} (identity, created_at);
    """,
    # Sessions of one call under a key the edge made up, kept out of listings; those stored
    # before the flag are known by the form of such keys (gateway_edge/sessions.py).
    10: f"""
    ALTER TABLE {SESSIONS_TABLE} ADD COLUMN IF NOT EXISTS one_off BOOLEAN NOT NULL DEFAULT false;
    UPDATE {SESSIONS_TABLE} SET one_off = true
    WHERE turns <= 1 AND starts_with(session_key, 'agent:' || agent_id || ':openai:');
    """,
    # Runs: turns a webhook started, one per replay key (run_rows.py).
    11: f"""
    CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
        run_id TEXT PRIMARY KEY,
        replay_key TEXT UNIQUE,
        status TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        session_key TEXT NOT NULL,
        hook TEXT NOT NULL,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        error TEXT NOT NULL,
        answer TEXT NOT NULL,
        holder TEXT NOT NULL,
        alive_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS clawgate_runs_by_session ON {RUNS_TABLE} (session_key, created_at);
    CREATE INDEX IF NOT EXISTS clawgate_runs_unfinished ON {RUNS_TABLE} (status, alive_at);
    """,
}
INSERT_COMPACTION = f"""
INSERT INTO {COMPACTIONS_TABLE}
    (session_key, covers, summary, tokens_before, tokens_after, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (session_key, covers) DO UPDATE SET
    summary = excluded.summary,
    tokens_before = excluded.tokens_before,
    tokens_after = excluded.tokens_after,
    created_at = excluded.created_at
"""
# A turn's read in one round trip: the latest compaction (or none: covers 0, summary NULL)
# beside each of the newest $2 messages after its cut (or one row of NULLs when there are none).
LOAD_CONTEXT = f"""
SELECT m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.name, m.reasoning, c.*
FROM (
    (SELECT {COMPACTION_COLUMNS} FROM {COMPACTIONS_TABLE}
     WHERE session_key = $1 ORDER BY covers DESC LIMIT 1)
    UNION ALL SELECT 0, NULL, 0, 0, 0
    ORDER BY 1 DESC LIMIT 1
) c
LEFT JOIN LATERAL (
    SELECT seq, {MESSAGE_COLUMNS} FROM {MESSAGES_TABLE}
    WHERE session_key = $1 AND seq > c.covers ORDER BY seq DESC LIMIT $2
) m ON true
ORDER BY m.seq DESC
"""
SUMMARIZE = f"""
INSERT INTO {SESSIONS_TABLE} (session_key, agent_id, title, turns, updated_at, owner, one_off)
VALUES ($1, $2, $3, 1, $4, $5, $6)
ON CONFLICT (session_key) DO UPDATE SET
    turns = {SESSIONS_TABLE}.turns + 1,
    one_off = false,
    updated_at = excluded.updated_at,
    agent_id = CASE WHEN {SESSIONS_TABLE}.agent_id = '' THEN excluded.agent_id
                    ELSE {SESSIONS_TABLE}.agent_id END,
    title = CASE WHEN {SESSIONS_TABLE}.title = '' THEN excluded.title
                 ELSE {SESSIONS_TABLE}.title END
"""
_MIGRATION_LOCK = 0x636C6177  # "claw": one worker migrates at a time


async def migrate(connection: Any) -> None:  # a pooled asyncpg connection (no stubs)
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS clawgate_schema (version INTEGER NOT NULL)"
        )
        version = await connection.fetchval("SELECT max(version) FROM clawgate_schema") or 0
        if not await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", MESSAGES_TABLE):
            version = 0  # the table was dropped under us: build it again from the start
        for number in range(version + 1, SCHEMA_VERSION + 1):
            await connection.execute(_MIGRATIONS[number])
            await connection.execute("INSERT INTO clawgate_schema VALUES ($1)", number)
