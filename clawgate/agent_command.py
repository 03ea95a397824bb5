"""`clawgate agent`: one turn straight through a worker's RunTurn, printed as it streams."""

from __future__ import annotations

import sys
from typing import assert_never

import grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from services.turn_events import kind_of, unknown_kind


async def run_agent_turn(
    address: str, agent_id: str, message: str, session_key: str, shared_secret: str | None
) -> int:
    metadata = (("authorization", f"Bearer {shared_secret}"),) if shared_secret else ()
    request = pb.RunTurnRequest(
        agent_id=agent_id,
        session_key=session_key,
        input=pb.Message(role=pb.ROLE_USER, text=message),
    )
    print(f"session: {session_key}", file=sys.stderr)
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            turn = pb_grpc.AgentServiceStub(channel).RunTurn(request, metadata=metadata)
            async for response in turn:
                for event in response.events:
                    match kind := kind_of(event):
                        case "delta":
                            sys.stdout.write(event.delta.text)
                        case "finished":
                            for call in event.finished.tool_calls:
                                sys.stdout.write(
                                    f"\n[tool call {call.id}: {call.name}({call.arguments})]"
                                )
                        case "reasoning":
                            sys.stderr.write(event.reasoning.text)  # thinking: not the answer
                        case "tool_started":
                            started = event.tool_started
                            sys.stderr.write(f"\n[running {started.name}({started.arguments})]\n")
                        case "started" | "tool_call" | "tool_finished":
                            pass  # no client tools are offered; a run's end shows in its text
                        case "error":
                            message = event.error.message
                            print(f"\nclawgate agent: turn failed: {message}", file=sys.stderr)
                            return 1
                        case None:
                            print(f"\nclawgate agent: {unknown_kind(event)}", file=sys.stderr)
                            return 1
                        case _:
                            assert_never(kind)
                sys.stdout.flush()
        except grpc.aio.AioRpcError as error:
            print(f"clawgate agent: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    sys.stdout.write("\n")
    return 0
