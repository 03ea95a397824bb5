"""A reply's tool calls, assembled from the pieces a provider streams.

Each call's id is unique within its session: a provider that sends none, or one already used in
the session's transcript (a scripted or small local model repeats `call_0`), gets a fresh one.
The first piece of each call carries its id on to the caller, so the client, the transcript
and the next turn's prompt all name the call alike. Calls of the agent's own tools (`own`) are
not the caller's: their pieces are kept from it, and its calls are numbered without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agent_worker.domain import ChatMessage, ToolCall
from agent_worker.events import ToolCallDelta
from services.ids import random_hex


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    shown_index: int | None  # its index for the caller; None for an own call
    arguments: list[str] = field(default_factory=list)


class ToolCalls:
    def __init__(self, history: Iterable[ChatMessage], own: frozenset[str] = frozenset()) -> None:
        self._history = history
        self._own = own
        self._taken: set[str] | None = None  # the ids in the history, once a call comes
        self._calls: dict[int, _Call] = {}
        self._shown = 0

    def add(self, piece: ToolCallDelta) -> ToolCallDelta | None:
        """Takes a piece in; returns it as the caller should see it (None: not the caller's)."""
        call = self._calls.get(piece.index)
        if call is None:
            if self._taken is None:
                self._taken = {c.id for message in self._history for c in message.tool_calls}
            call_id = piece.id
            if not call_id or call_id in self._taken:
                call_id = f"call_{random_hex()[:24]}"
            self._taken.add(call_id)
            shown_index = None
            if piece.name not in self._own:
                shown_index, self._shown = self._shown, self._shown + 1
            call = self._calls[piece.index] = _Call(call_id, piece.name, shown_index)
            call.arguments.append(piece.arguments)
            if shown_index is None:
                return None
            return ToolCallDelta(shown_index, call_id, piece.name, piece.arguments)
        name = ""
        if piece.name and not call.name:  # a provider that names the call late
            call.name = name = piece.name
        call.arguments.append(piece.arguments)
        if call.shown_index is None:
            return None
        return ToolCallDelta(call.shown_index, "", name, piece.arguments)

    def whole(self) -> tuple[ToolCall, ...]:
        """The calls in index order; arguments "{}" when the model wrote none."""
        return tuple(
            ToolCall(call.id, call.name, "".join(call.arguments) or "{}")
            for _, call in sorted(self._calls.items())
        )
