"""A `/v1/responses` request as the turn it asks for.

`instructions` and `system`/`developer` message items join the instructions; `user` and
`assistant` items are messages; `function_call` items are the assistant's tool calls (joining
the assistant message just before them), `function_call_output` items tool results;
`reasoning` and `item_reference` items are accepted and left out. Every refusal names
`input[<index>]` as the client numbered its items.
"""

from __future__ import annotations

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.responses_request import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputText,
    MessageItem,
    NamedFunctionChoice,
    ResponsesRequest,
)
from gateway_edge.turn_input import Conversation, ImageBudget, TurnInput, offered_tools, tool_of

_ROLES = {"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}


def responses_turn(request: ResponsesRequest) -> TurnInput:
    turn_input, context, instructions = _conversation(request).split()
    if request.instructions:
        instructions.insert(0, request.instructions)
    sampling = pb.SamplingOptions(
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_output_tokens,
    )
    tools, tool_choice = _tools(request)
    return TurnInput(
        input=turn_input,
        context=context,
        instructions=instructions,
        sampling=sampling,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        model=request.model,
        user=request.user,
    )


def _conversation(request: ResponsesRequest) -> Conversation:
    conversation = Conversation("input")
    if isinstance(request.input, str):
        conversation.add(0, pb.Message(role=pb.ROLE_USER, text=request.input))
        return conversation
    images = ImageBudget()
    for index, item in enumerate(request.input):
        if isinstance(item, MessageItem):
            text, decoded = _text_and_images(item, index, images)
            if item.role in ("system", "developer"):
                conversation.instruct(index, text)
            else:
                conversation.add(
                    index, pb.Message(role=_ROLES[item.role], text=text, images=decoded)
                )
        elif isinstance(item, FunctionCallItem):
            last = conversation.last()
            if last is None or last.role != pb.ROLE_ASSISTANT:
                last = pb.Message(role=pb.ROLE_ASSISTANT)
                conversation.add(index, last)
            last.tool_calls.add(id=item.call_id, name=item.name, arguments=item.arguments)
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output
            text = output if isinstance(output, str) else "".join(part.text for part in output)
            conversation.add(
                index, pb.Message(role=pb.ROLE_TOOL, text=text, tool_call_id=item.call_id)
            )
    return conversation


def _text_and_images(
    item: MessageItem, index: int, images: ImageBudget
) -> tuple[str, list[pb.Image]]:
    if isinstance(item.content, str):
        return item.content, []
    texts: list[str] = []
    decoded: list[pb.Image] = []
    for part_index, part in enumerate(item.content):
        if isinstance(part, InputText):
            texts.append(part.text)
        else:
            param = f"input[{index}].content[{part_index}].image_url"
            decoded.append(images.decode(part.image_url or "", param))
    # An assistant's output_text parts are one reply cut in pieces; a user's parts are apart.
    return ("" if item.role == "assistant" else "\n").join(texts), decoded


def _tools(request: ResponsesRequest) -> tuple[list[pb.Tool], pb.ToolChoice | None]:
    tools = [tool_of(t.name, t.description, t.parameters) for t in request.tools or ()]
    choice = request.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        return offered_tools(tools, None, choice.name)
    return offered_tools(tools, choice)
