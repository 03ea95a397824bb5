"""How both stores keep a message's structure beside its text: tool calls as a JSON list,
a tool result's call id and tool name. Rows written before these columns existed read as plain
messages. Also the columns of a compaction record, the same in both stores."""

from __future__ import annotations

from typing import cast

import orjson

from agent_worker.domain import ChatMessage, Role, ToolCall

# A compaction record's columns, in both stores, in the order of Compaction's fields.
COMPACTION_COLUMNS = "covers, summary, tokens_before, tokens_after, created_at"


def tool_calls_json(message: ChatMessage) -> str | None:
    if not message.tool_calls:
        return None
    calls = [[call.id, call.name, call.arguments] for call in message.tool_calls]
    return orjson.dumps(calls).decode()


def message_of(
    role: str, text: str, tool_calls: str | None, tool_call_id: str | None, name: str | None
) -> ChatMessage:
    calls = tuple(ToolCall(*call) for call in orjson.loads(tool_calls)) if tool_calls else ()
    return ChatMessage(
        cast(Role, role), text, tool_calls=calls, tool_call_id=tool_call_id or "", name=name or ""
    )


def row_values(message: ChatMessage) -> tuple[str, str, str | None, str | None, str | None]:
    """role, content, tool_calls, tool_call_id, name"""
    return (
        message.role,
        message.text,
        tool_calls_json(message),
        message.tool_call_id or None,
        message.name or None,
    )
