"""The `worker` scenario: RunTurn over gRPC straight to one worker on the echo provider, no
edge: what a turn costs the worker alone."""

from __future__ import annotations

import asyncio
import statistics
import time

import grpc

from bench.harness import Row, peak_rss_mb
from bench.stack import Bench
from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import clawgate, echo_config, wait_until, worker_serving, write_config


def worker_alone(bench: Bench) -> Row:
    config = echo_config(bench.tmp)
    config["models"]["providers"]["echo"] = {
        "api": "echo",
        "reply": " ".join(f"w{i}" for i in range(16)),
    }
    config["agents"]["list"] = [{"id": "main", "default": True}]
    config["worker"]["maxConcurrentTurns"] = 1024
    path = write_config(bench.tmp, config, "worker-alone.json5")
    address = config["worker"]["listen"]
    worker = bench.process(
        clawgate(path, "--log-level", bench.args.log_level, "worker"), "worker-alone"
    )
    wait_until(lambda: worker_serving(address), 60, "worker", worker)

    async def load(seconds: float) -> tuple[int, list[float]]:
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.AgentServiceStub(channel)

            async def client(index: int) -> None:
                turn = 0
                while time.monotonic() < deadline:
                    turn += 1
                    request = pb.RunTurnRequest(
                        agent_id="main",
                        session_key=f"bench:{index}:{turn}",
                        input=pb.Message(role=pb.ROLE_USER, text="hi"),
                    )
                    started = time.perf_counter()
                    async for _ in stub.RunTurn(request):
                        pass
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(client(index) for index in range(bench.args.connections)))
        return len(latencies), latencies

    asyncio.run(load(2))
    count, latencies = asyncio.run(load(bench.args.seconds))
    quantiles = statistics.quantiles(latencies, n=100)
    row = Row(
        "worker alone (gRPC RunTurn, echo)",
        count / bench.args.seconds,
        quantiles[49] * 1000,
        quantiles[98] * 1000,
        0,
        None,
        {"worker": peak_rss_mb(worker.pid)},
    )
    print(row.markdown(), flush=True)
    return row
