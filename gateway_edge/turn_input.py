"""The turn a request asks for, in no API's shape: each dialect's adapter builds a `TurnInput`
from its own parsed request, and the driver sends it to a worker as a `RunTurnRequest`.

What every dialect checks alike lives here too, with the field names the dialect passes in:
which message is the turn's input and which tools the model is offered (images and files:
input_sources.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import bad_request
from gateway_edge.sessions import Session

if TYPE_CHECKING:
    from gateway_edge.input_sources import InputSources

_INPUT_ROLES = (pb.ROLE_USER, pb.ROLE_TOOL)


@dataclass(slots=True)
class TurnInput:
    """One turn: the message it answers, the conversation the client sent before it, the
    caller's extra instructions, sampling and answer limits, tools, and the session hints."""

    input: pb.Message
    context: list[pb.Message]
    instructions: list[str]
    sampling: pb.SamplingOptions
    tools: list[pb.Tool] = field(default_factory=list)
    tool_choice: pb.ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    model: str | None = None  # names the agent (`openclaw:<id>`, `agent:<id>`)
    user: str | None = None  # a stable user id: the session it derives is theirs
    logprobs: bool = False
    # Images by URL and files, made ready (fetched, read) before the turn is sent; None: none.
    sources: InputSources | None = None


def missing_input(field_name: str) -> str:
    return f"Missing user message in {field_name}."


class Conversation:
    """The client's messages in order, each with its index in the request's `field_name`
    array, so that a refusal names the item the client sent."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name
        self._instructions: list[tuple[int, str]] = []
        self._messages: list[tuple[int, pb.Message]] = []

    def instruct(self, index: int, text: str) -> None:
        """A system or developer message: joins the agent's instructions for this turn."""
        if text.strip():
            self._instructions.append((index, text))

    def add(self, index: int, message: pb.Message) -> None:
        self._messages.append((index, message))

    def last(self) -> pb.Message | None:
        return self._messages[-1][1] if self._messages else None

    def split(self) -> tuple[pb.Message, list[pb.Message], list[str]]:
        """The input (the last user or tool message), the context before it, and the
        instructions given before it."""
        for position in range(len(self._messages) - 1, -1, -1):
            if self._messages[position][1].role in _INPUT_ROLES:
                break
        else:
            raise bad_request(missing_input(self.field_name), self.field_name)
        for later_index, later in self._messages[position + 1 :]:
            if later.role == pb.ROLE_ASSISTANT:  # dropping it would answer another question
                raise bad_request(
                    f"{self.field_name}[{later_index}] is an assistant message after the last"
                    " user or tool message; this gateway cannot continue a partial assistant"
                    " reply: end with a user or tool message.",
                    self.field_name,
                )
        input_index, turn_input = self._messages[position]
        is_result = turn_input.role == pb.ROLE_TOOL  # an empty result still completes its call
        if not is_result and not turn_input.text.strip() and not turn_input.images:
            raise bad_request(missing_input(self.field_name), self.field_name)
        context = [message for _, message in self._messages[:position]]
        instructions = [text for index, text in self._instructions if index < input_index]
        return turn_input, context, instructions


def tool_of(name: str, description: str | None, parameters: dict[str, Any] | None) -> pb.Tool:
    """A function the client offers, as the turn carries it (its JSON schema serialized)."""
    return pb.Tool(
        name=name,
        description=description or "",
        parameters_json=orjson.dumps(parameters).decode() if parameters else "",
    )


_CHOICE_MODES = {"none": pb.TOOL_CHOICE_MODE_NONE, "required": pb.TOOL_CHOICE_MODE_REQUIRED}


def offered_tools(
    tools: list[pb.Tool], mode: str | None, pinned: str | None = None, param: str = "tool_choice"
) -> tuple[list[pb.Tool], pb.ToolChoice | None]:
    """The tools the model is offered and how it must choose: `mode` is "auto", "none",
    "required" or None; `pinned` names the one function it must call. `param`: the field the
    client chose with, for a refusal to name."""
    names = {tool.name for tool in tools}
    if pinned is not None and pinned not in names:
        raise bad_request(
            f"{param} names the function {pinned!r}, which is not among the tools.", param
        )
    if mode == "required" and not tools:
        raise bad_request(f"{param} 'required' needs tools.", param)
    if not tools:
        return [], None
    if pinned is not None:  # a pinned function narrows what the model is offered to that one
        narrowed = [tool for tool in tools if tool.name == pinned]
        return narrowed, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_FUNCTION, function_name=pinned)
    if mode is None or mode == "auto":
        return tools, None
    return tools, pb.ToolChoice(mode=_CHOICE_MODES[mode])


def turn_request_for(
    turn: TurnInput, agent_id: str, session: Session, request_id: str
) -> pb.RunTurnRequest:
    return pb.RunTurnRequest(
        agent_id=agent_id,
        session_key=session.key,
        new_session=not session.named,
        input=turn.input,
        context=turn.context,
        extra_system_prompt="\n\n".join(turn.instructions),
        sampling=turn.sampling,
        request_id=request_id,
        tools=turn.tools,
        tool_choice=turn.tool_choice,
        parallel_tool_calls=turn.parallel_tool_calls,
    )
