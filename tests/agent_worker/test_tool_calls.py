"""ToolCalls: unique ids, and the agent's own calls kept from the caller."""

from __future__ import annotations

from agent_worker.domain import ChatMessage, ToolCall
from agent_worker.events import ToolCallDelta
from agent_worker.tool_calls import ToolCalls


def test_own_calls_are_kept_from_the_caller_and_client_calls_numbered_without_them() -> None:
    calls = ToolCalls((), own=frozenset({"time__now"}))
    assert calls.add(ToolCallDelta(0, "a", "time__now", '{"tz"')) is None
    assert calls.add(ToolCallDelta(0, "", "", ': "UTC"}')) is None
    shown = calls.add(ToolCallDelta(1, "b", "get_weather", '{"city"'))
    assert shown == ToolCallDelta(0, "b", "get_weather", '{"city"')
    assert calls.add(ToolCallDelta(1, "", "", ': "Oslo"}')) == ToolCallDelta(0, "", "", ': "Oslo"}')
    assert calls.whole() == (
        ToolCall("a", "time__now", '{"tz": "UTC"}'),
        ToolCall("b", "get_weather", '{"city": "Oslo"}'),
    )


def test_an_id_already_in_the_history_is_replaced() -> None:
    history = (ChatMessage("assistant", "", tool_calls=(ToolCall("call_0", "f", "{}"),)),)
    shown = ToolCalls(history).add(ToolCallDelta(0, "call_0", "f", "{}"))
    assert shown is not None and shown.id.startswith("call_") and shown.id != "call_0"
