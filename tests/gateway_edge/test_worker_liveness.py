"""A busy worker is not a dead one (issue 44): while a real grpc.aio server's event loop is
held, its health check times out but it still takes a connection, so the edge keeps it (and a
turn sent to it); a stopped process takes none and is passed over."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import free_port
from gateway_edge.worker import Worker
from gateway_edge.worker_link import WorkerLink

# A health server whose event loop is held for 4 s each time it reads a line on stdin.
SERVER = """
import asyncio, sys, time
import grpc
from grpc_health.v1 import health, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    print("up", flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print("holding", flush=True)
        time.sleep(4)  # the loop is held: CPU-bound work on it, as a turn could do
        print("free", flush=True)

asyncio.run(main())
"""


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "up\n"
    yield process, address
    process.send_signal(signal.SIGCONT)
    process.kill()
    process.wait()


def worker_at(address: str, channel: grpc.aio.Channel) -> Worker:
    agents = pb_grpc.AgentServiceStub(channel)
    return Worker(
        address, channel, agents, health_pb2_grpc.HealthStub(channel), WorkerLink(agents, ())
    )


async def test_a_busy_worker_answers_and_a_stopped_one_does_not(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    process, address = server
    assert process.stdin is not None and process.stdout is not None
    async with grpc.aio.insecure_channel(address) as channel:
        worker = worker_at(address, channel)
        assert await worker.answers(1.0)

        process.stdin.write("hold\n")
        process.stdin.flush()
        assert process.stdout.readline() == "holding\n"
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as check:  # the loop is held indeed
            await worker.health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        assert check.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await worker.answers(0.5) and worker.answering
        assert time.monotonic() - started < 3.5, "checked after the loop was free again"
        assert process.stdout.readline() == "free\n"

        process.send_signal(signal.SIGSTOP)
        assert not await worker.answers(1.0) and not worker.answering
        process.send_signal(signal.SIGCONT)
        assert await worker.answers(2.0) and worker.answering
