"""Fair turns on a full worker (issue 45): identity A keeps 100 slow turns waiting on a real
worker with maxConcurrentTurns 4, and identity B's one turn starts within about one of A's
turns, not behind all of them. gRPC clients name who they act for (`Caller`), as the edge does
for people behind a trusted proxy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import echo_config, start_worker, write_config

A_TURNS = 100


async def first_event_after(stub: pb_grpc.AgentServiceStub, person: str, key: str) -> float:
    """Seconds from the call to the turn's first event; reads the turn to its end."""
    request = pb.RunTurnRequest(
        agent_id="slow",
        session_key=key,
        input=pb.Message(role=pb.ROLE_USER, text="one"),
        caller=pb.Caller(identity=person),
    )
    asked = time.monotonic()
    started: float | None = None
    async for reply in stub.RunTurn(request, timeout=300):
        if started is None and reply.events:
            started = time.monotonic() - asked
        assert all(event.WhichOneof("event") != "error" for event in reply.events), reply
    assert started is not None
    return started


async def a_crowd_and_one(address: str) -> tuple[list[float], float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        crowd = [
            asyncio.create_task(first_event_after(stub, "a", f"fair-a-{n}")) for n in range(A_TURNS)
        ]
        await asyncio.sleep(1.0)  # A's first turns run, the rest wait
        single = await first_event_after(stub, "b", "fair-b")
        return list(await asyncio.gather(*crowd)), single


def test_one_turn_of_b_waits_for_at_most_one_of_as_hundred(tmp_path: Path) -> None:
    config = echo_config(tmp_path)
    config["worker"]["maxConcurrentTurns"] = 4
    worker = start_worker(
        write_config(tmp_path, config), config["worker"]["listen"], tmp_path / "worker.log"
    )
    try:
        crowd, single = asyncio.run(a_crowd_and_one(config["worker"]["listen"]))
    finally:
        worker.stop()
    # A `slow` turn takes about 0.7 s (two words, 700 ms apart): four run at a time.
    a_turn = 0.7
    print(
        f"\n[45] B's turn started {single:.2f} s after it was sent; A's 100 waited up to"
        f" {max(crowd):.1f} s (median {sorted(crowd)[A_TURNS // 2]:.1f} s)"
    )
    assert max(crowd) > 10 * a_turn  # A's crowd did wait: a FIFO would put B behind it
    assert single < 3 * a_turn, single
