"""The worker's proto ⇄ domain conversions: requests in, transcripts and usage out (a turn's
events go out through event_mapping.py)."""

from __future__ import annotations

from typing import Any, Literal, TypeVar, cast

from agent_worker.domain import (
    Caller,
    ChatMessage,
    Compaction,
    Image,
    Role,
    Sampling,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    TurnBudget,
    TurnRequest,
)
from agent_worker.errors import InvalidTurnError
from agent_worker.usage import UsageGroup, UsageQuery, UsageSums
from clawgate.agent.v1 import agent_service_pb2 as pb
from services.gateway_config import OPERATOR_IDENTITY

_ROLES: dict[int, Role] = {
    pb.ROLE_UNSPECIFIED: "user",  # the contract reads an unset role as the user's
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}
_ROLE_NUMBERS = {role: number for number, role in _ROLES.items()}
_RESPONSE_FORMATS: dict[int, Literal["text", "json_object", "json_schema"] | None] = {
    pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED: None,
    pb.RESPONSE_FORMAT_TYPE_TEXT: "text",
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}
_TOOL_CHOICES: dict[int, ToolChoiceMode] = {
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: "auto",
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
    pb.TOOL_CHOICE_MODE_FUNCTION: "function",
}
_UNSET_SAMPLING = Sampling()
T = TypeVar("T")
_AUTO = ToolChoice()


def _known(value: int, names: dict[int, T], field: str, enum: str) -> T:
    """An enum value of the wire in the worker's terms; one this worker does not know (a newer
    client's) is refused, never read as another."""
    if value not in names:
        raise InvalidTurnError(
            f"{field}: {value} is not a value of clawgate.agent.v1.{enum} this worker knows"
        )
    return names[value]


def message_from_proto(message: pb.Message) -> ChatMessage:
    images = message.images
    calls = message.tool_calls
    return ChatMessage(
        role=_known(message.role, _ROLES, "message role", "Role"),
        text=message.text,
        images=tuple(Image(image.media_type, image.data) for image in images) if images else (),
        tool_calls=tuple(ToolCall(c.id, c.name, c.arguments) for c in calls) if calls else (),
        tool_call_id=message.tool_call_id,
        name=message.name,
    )


def tool_call_to_proto(call: ToolCall) -> pb.ToolCall:
    return pb.ToolCall(id=call.id, name=call.name, arguments=call.arguments)


def message_to_proto(message: ChatMessage) -> pb.Message:
    role = cast(pb.Role, _ROLE_NUMBERS.get(message.role, pb.ROLE_USER))
    return pb.Message(
        role=role,
        text=message.text,
        tool_calls=[tool_call_to_proto(call) for call in message.tool_calls],
        tool_call_id=message.tool_call_id,
        name=message.name,
    )


def compaction_to_proto(compaction: Compaction) -> pb.Compaction:
    return pb.Compaction(
        covers=compaction.covers,
        summary=compaction.summary,
        tokens_before=compaction.tokens_before,
        tokens_after=compaction.tokens_after,
        created_at=compaction.created_at,
    )


def _tool_choice(choice: pb.ToolChoice) -> ToolChoice:
    mode = _known(choice.mode, _TOOL_CHOICES, "tool_choice.mode", "ToolChoiceMode")
    if mode == "auto":
        return _AUTO
    return ToolChoice(mode, choice.function_name)


def sampling_from_proto(sampling: pb.SamplingOptions) -> Sampling:
    # ListFields names only the fields that are set (optional ones even when 0): one call
    # instead of a HasField per option, and most requests set none.
    fields = sampling.ListFields()
    if not fields:
        return _UNSET_SAMPLING
    values: dict[str, Any] = {descriptor.name: value for descriptor, value in fields}
    return Sampling(
        temperature=values.get("temperature"),
        top_p=values.get("top_p"),
        max_tokens=values.get("max_tokens"),
        stop=tuple(values.get("stop", ())),
        seed=values.get("seed"),
        presence_penalty=values.get("presence_penalty"),
        frequency_penalty=values.get("frequency_penalty"),
        response_format=_known(
            values.get("response_format", 0),
            _RESPONSE_FORMATS,
            "sampling.response_format",
            "ResponseFormatType",
        ),
        json_schema=values.get("json_schema", ""),
        logprobs=values.get("logprobs", False),
        top_logprobs=values.get("top_logprobs"),
    )


def turn_request_from_proto(request: pb.RunTurnRequest) -> TurnRequest:
    return TurnRequest(
        agent_id=request.agent_id,
        session_key=request.session_key,
        input=message_from_proto(request.input),
        context=tuple(map(message_from_proto, request.context)),
        extra_system_prompt=request.extra_system_prompt,
        sampling=sampling_from_proto(request.sampling),
        request_id=request.request_id,
        new_session=request.new_session,
        tools=tuple(Tool(t.name, t.description, t.parameters_json) for t in request.tools)
        if request.tools
        else (),
        tool_choice=_tool_choice(request.tool_choice) if request.HasField("tool_choice") else _AUTO,
        parallel_tool_calls=(
            request.parallel_tool_calls if request.HasField("parallel_tool_calls") else None
        ),
        model=request.model,
        response_id=request.response_id,
        caller=caller_from_proto(request),
        channel_context=tuple(sorted(request.channel_context.items()))
        if request.channel_context
        else (),
        traceparent=request.traceparent,
        budget=_budget_from_proto(request),
    )


def _budget_from_proto(request: pb.RunTurnRequest) -> TurnBudget | None:
    if not request.HasField("budget"):
        return None
    budget = request.budget
    return TurnBudget(
        budget.tokens if budget.HasField("tokens") else None,
        budget.usd if budget.HasField("usd") else None,
    )


def caller_from_proto(request: Any) -> Caller | None:
    """A request's `caller`; None (the gateway's owner) when it has none."""
    if not request.HasField("caller"):
        return None
    return Caller(request.caller.identity, request.caller.admin)


_USAGE_GROUPS: dict[int, UsageGroup] = {
    pb.USAGE_GROUP_IDENTITY: "identity",
    pb.USAGE_GROUP_AGENT: "agent",
    pb.USAGE_GROUP_MODEL: "model",
    pb.USAGE_GROUP_DAY: "day",
    pb.USAGE_GROUP_SESSION: "session",
}


def usage_query_from_proto(request: pb.GetUsageRequest) -> UsageQuery:
    """The range and groups asked for; a caller without admin sees only its own usage."""
    groups = tuple(
        _known(group, _USAGE_GROUPS, "group_by", "UsageGroup") for group in request.group_by
    )
    caller = caller_from_proto(request)
    identity = None if caller is None or caller.admin else (caller.identity or OPERATOR_IDENTITY)
    return UsageQuery(request.from_time, request.to_time, tuple(dict.fromkeys(groups)), identity)


def usage_sums_to_proto(sums: UsageSums) -> pb.UsageRow:
    return pb.UsageRow(
        identity=sums.identity,
        agent_id=sums.agent,
        model=sums.model,
        day=sums.day,
        session_key=sums.session,
        requests=sums.requests,
        input_tokens=sums.input_tokens,
        output_tokens=sums.output_tokens,
        cache_read_tokens=sums.cache_read_tokens,
        cache_write_tokens=sums.cache_write_tokens,
        cost_usd=sums.cost_usd,
    )
