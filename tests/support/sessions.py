"""Reading session transcripts from a worker, and checking turns that ran one at a time."""

from __future__ import annotations

import grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc


def transcript(worker_address: str, session_key: str) -> list[tuple[int, str]]:
    """(role, text) of every stored message, oldest first, through GetSession."""
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(worker_address, options=options) as channel:
        reply = pb_grpc.AgentServiceStub(channel).GetSession(
            pb.GetSessionRequest(session_key=session_key)
        )
    return [(message.role, message.text) for message in reply.messages]


def assert_one_turn_at_a_time(replies: list[str], stored: list[tuple[int, str]]) -> None:
    """For the `paced` echo agent ("turns={turns} for {input}"): every turn saw all the turns
    before it, and the transcript holds them whole and in order."""
    count = len(replies)
    assert sorted(int(reply.split()[0].removeprefix("turns=")) for reply in replies) == list(
        range(0, 2 * count, 2)
    )
    assert len(stored) == 2 * count
    for index in range(count):
        (user_role, user_text), (assistant_role, answer) = stored[2 * index], stored[2 * index + 1]
        assert (user_role, assistant_role) == (pb.ROLE_USER, pb.ROLE_ASSISTANT)
        assert answer == f"turns={2 * index} for {user_text}"
