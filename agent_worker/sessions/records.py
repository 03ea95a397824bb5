"""How both stores keep a message's structure beside its text: tool calls as a JSON list,
a tool result's call id and tool name, an assistant's signed thinking as a JSON list. Rows
written before these columns existed read as plain
messages. Also the columns of a compaction record, the same in both stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson

from agent_worker.domain import ChatMessage, Reasoning, Role, ToolCall
from agent_worker.usage import ModelUsage, UsageQuery, UsageSums
from services.gateway_config import OPERATOR_IDENTITY

# A compaction record's columns, in both stores, in the order of Compaction's fields.
COMPACTION_COLUMNS = "covers, summary, tokens_before, tokens_after, created_at"
# A message's columns, in both stores, in the order of `message_of`'s parameters.
MESSAGE_COLUMNS = "role, content, tool_calls, tool_call_id, name, reasoning"


def tool_calls_json(message: ChatMessage) -> str | None:
    if not message.tool_calls:
        return None
    calls = [[call.id, call.name, call.arguments] for call in message.tool_calls]
    return orjson.dumps(calls).decode()


def message_of(
    role: str,
    text: str,
    tool_calls: str | None,
    tool_call_id: str | None,
    name: str | None,
    reasoning: str | None = None,
) -> ChatMessage:
    calls = tuple(ToolCall(*call) for call in orjson.loads(tool_calls)) if tool_calls else ()
    thoughts = (
        tuple(Reasoning(*thought) for thought in orjson.loads(reasoning)) if reasoning else ()
    )
    return ChatMessage(
        cast(Role, role),
        text,
        tool_calls=calls,
        tool_call_id=tool_call_id or "",
        name=name or "",
        reasoning=thoughts,
    )


def row_values(
    message: ChatMessage,
) -> tuple[str, str, str | None, str | None, str | None, str | None]:
    """The values of MESSAGE_COLUMNS. An assistant's thinking is kept with its signatures: a
    later call that continues its tool loop must send it back unchanged."""
    reasoning = (
        orjson.dumps(
            [
                [thought.text, thought.signature, thought.redacted, thought.item_id]
                for thought in message.reasoning
            ]
        ).decode()
        if message.reasoning
        else None
    )
    return (
        message.role,
        message.text,
        tool_calls_json(message),
        message.tool_call_id or None,
        message.name or None,
        reasoning,
    )


# A usage record's columns, in both stores: one row per model call of a request (a turn's
# calls share its run id; an embedding request has no session).
USAGE_COLUMNS = (
    "request_id, session_key, call, identity, agent_id, provider, model, input_tokens,"
    " output_tokens, cache_read_tokens, cache_write_tokens, estimated, cost_usd, created_at"
)


def usage_insert(table: str, placeholder: str) -> str:
    """The statement that stores usage_rows; `placeholder` formats a parameter's number."""
    count = USAGE_COLUMNS.count(",") + 1
    places = ", ".join(placeholder.format(number) for number in range(1, count + 1))
    return f"INSERT INTO {table} ({USAGE_COLUMNS}) VALUES ({places})"


def usage_rows(
    request_id: str,
    session_key: str,
    identity: str,
    agent_id: str,
    calls: Sequence[ModelUsage],
    now: float,
) -> list[tuple[object, ...]]:
    """The values of USAGE_COLUMNS for one request's calls."""
    return [
        (
            request_id,
            session_key,
            number,
            identity or OPERATOR_IDENTITY,
            agent_id,
            call.provider,
            call.model,
            call.usage.prompt_tokens,
            call.usage.completion_tokens,
            call.usage.cache_read_tokens,
            call.usage.cache_write_tokens,
            call.usage.estimated,
            call.cost_usd,
            now,
        )
        for number, call in enumerate(calls, start=1)
    ]


# How each store says a UTC day of a Unix time held in `created_at`.
SQLITE_DAY = "date(created_at, 'unixepoch')"
POSTGRES_DAY = "to_char(to_timestamp(created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


_GROUPS = ("identity", "agent", "model", "day", "session")  # a usage row's first columns


def usage_select(table: str, query: UsageQuery, day: str, placeholder: str) -> str:
    """The SQL that sums `query` (its values: usage_values); `placeholder` formats a
    parameter's number ('?' or '${}')."""
    columns = {
        "identity": "identity",
        "agent": "agent_id",
        "model": "provider || '/' || model",
        "day": day,
        "session": "session_key",
    }
    grouped = [columns[group] if group in query.group_by else "''" for group in _GROUPS]
    where = f"created_at >= {placeholder.format(1)} AND created_at < {placeholder.format(2)}"
    if query.identity is not None:
        where += f" AND identity = {placeholder.format(3)}"
    sql = (
        f"SELECT {', '.join(grouped)}, COUNT(DISTINCT request_id),"
        " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
        " COALESCE(SUM(cache_read_tokens), 0), COALESCE(SUM(cache_write_tokens), 0),"
        f" COALESCE(SUM(cost_usd), 0) FROM {table} WHERE {where}"
    )
    if query.group_by:
        positions = ", ".join(str(_GROUPS.index(group) + 1) for group in query.group_by)
        sql += f" GROUP BY {positions} ORDER BY {positions}"
    return sql


def usage_values(query: UsageQuery) -> tuple[object, ...]:
    values: tuple[object, ...] = (query.start, query.end)
    return values if query.identity is None else (*values, query.identity)


def usage_sums(row: Sequence[Any]) -> UsageSums:
    return UsageSums(
        identity=row[0],
        agent=row[1],
        model=row[2],
        day=row[3],
        session=row[4],
        requests=int(row[5]),
        input_tokens=int(row[6]),
        output_tokens=int(row[7]),
        cache_read_tokens=int(row[8]),
        cache_write_tokens=int(row[9]),
        cost_usd=float(row[10]),
    )
