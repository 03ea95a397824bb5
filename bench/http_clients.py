"""The worker's HTTP client against httpx, for one provider call: CPU per streamed request.

    python -m bench.http_clients [--requests 3000]

Both post the same Anthropic Messages body to the benchmark stand-in (its pre-encoded 16-word
answer) over one kept-alive connection, one request at a time, and read the answer to its end;
the figure is this process's CPU time per request (the stand-in runs in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
import yarl

from agent_worker.providers.http_client import HttpClient
from bench.stack import answers
from devkit.processes import Process, free_port, wait_until

BODY = orjson.dumps(
    {
        "model": "m",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
)
HEADERS = {
    "content-type": "application/json",
    "accept": "text/event-stream",
    "anthropic-version": "2023-06-01",
    "x-api-key": "bench",
}
WARM_UP = 200


async def ours(url: str, requests: int) -> float:
    client = HttpClient(yarl.URL(url), HEADERS, connect_timeout=5, read_timeout=60)

    async def one() -> None:
        response = await client.post(BODY)
        while await response.next_block() is not None:
            pass
        response.release()

    return await _cpu_per_request(one, requests)


async def with_httpx(url: str, requests: int) -> float:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5)) as client:

        async def one() -> None:
            async with client.stream("POST", url, content=BODY, headers=HEADERS) as response:
                async for _ in response.aiter_raw():
                    pass

        return await _cpu_per_request(one, requests)


async def _cpu_per_request(one: Callable[[], Awaitable[None]], requests: int) -> float:
    for _ in range(WARM_UP):
        await one()
    started = time.process_time()
    for _ in range(requests):
        await one()
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    standin = Process(
        [sys.executable, "-m", "bench.upstream_standin", "--port", str(port)],
        Path(tempfile.gettempdir()) / f"http-clients-standin-{port}.log",
    ).start()
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/v1/models"), 20, "stand-in", standin)
        url = f"http://127.0.0.1:{port}/v1/messages"
        for _ in range(args.rounds):
            print(f"HttpClient: {asyncio.run(ours(url, args.requests)):.0f} µs CPU per request")
            print(
                f"httpx {httpx.__version__}: {asyncio.run(with_httpx(url, args.requests)):.0f} µs"
            )
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
