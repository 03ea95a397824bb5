"""What is cut of a prompt over its budget, in what the model sees only (the stored transcript
keeps every message): old tool results first, then the largest messages, and a client's tool
result that alone is too large."""

from __future__ import annotations

from collections.abc import Sequence

from agent_worker.compaction import clipped_message
from agent_worker.context_window import MESSAGE_OVERHEAD_TOKENS, Counts
from agent_worker.domain import ChatMessage

MIN_CLIPPED = 32  # tokens: the least a clipped message keeps
# A tool result older than the turn's input takes at most this share of the prompt budget.
_OLD_TOOL_RESULT_SHARE = 8


def old_tool_results_clipped(
    history: Sequence[ChatMessage], budget: int, counts: Counts
) -> list[ChatMessage]:
    limit = max(budget // _OLD_TOOL_RESULT_SHARE, MIN_CLIPPED)
    return [
        clipped_message(message, limit, counts) if message.role == "tool" else message
        for message in history
    ]


def largest_clipped(
    history: Sequence[ChatMessage], steps: Sequence[ChatMessage], excess: int, counts: Counts
) -> tuple[list[ChatMessage], list[ChatMessage]]:
    """History and steps with their largest messages clipped, largest first, until `excess`
    tokens are gone: one pass in size order, so clipping stays linear in the messages."""
    pool = [*history, *steps]
    by_size = sorted(range(len(pool)), key=lambda at: counts.message(pool[at]), reverse=True)
    for index in by_size:
        if excess <= 0:
            break
        tokens = counts.message(pool[index])
        clipped = clipped_message(pool[index], max(tokens - excess, MIN_CLIPPED), counts)
        if clipped is pool[index]:
            continue  # nothing of its text can go (its size is in its tool calls)
        excess -= tokens - counts.message(clipped)
        pool[index] = clipped
    return pool[: len(history)], pool[len(history) :]


def tool_result_within(result: ChatMessage, room: int, counts: Counts) -> ChatMessage:
    """A client tool's result in at most `room` tokens: it is data, not the user's words, so
    it is clipped as old ones are rather than refused."""
    return clipped_message(result, max(room - MESSAGE_OVERHEAD_TOKENS, MIN_CLIPPED), counts)
