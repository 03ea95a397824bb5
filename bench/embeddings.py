"""Embeddings on the embedded model: throughput and latency for 1 and 32 inputs per request, and
the latency of a 1-input request while a long chat answer runs on the same worker.

    python -m bench.embeddings [--seconds 10]

One edge and one worker on the default model (SmolLM2-135M), info level. Requests are sent one at
a time (the model embeds one batch at a time on its own thread); the figures are the median
latency and inputs per second. The last row sends a chat request for a 400-token answer and,
while it is being written, the same 1-input embedding requests: the embedding runs on its own
instance and thread, so its latency should stay its own.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from devkit.processes import TOKEN, echo_config, start_stack

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENTENCE = "the quick brown fox jumps over the lazy dog number {}"


async def _latencies(
    client: httpx.AsyncClient,
    url: str,
    inputs: int,
    seconds: float,
    beside: asyncio.Future[httpx.Response] | None = None,
) -> list[float]:
    """Latencies for `seconds`, or while `beside` (another request) is still running."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline and not (beside is not None and beside.done()):
        texts = [SENTENCE.format(count + index) for index in range(inputs)]
        count += inputs
        started = time.perf_counter()
        response = await client.post(url, json={"model": "openclaw", "input": texts})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


def _row(name: str, inputs: int, latencies: list[float]) -> str:
    median = statistics.median(latencies)
    rate = inputs * len(latencies) / sum(latencies)
    return f"| {name} | {len(latencies)} | {median * 1000:.0f} ms | {rate:.0f} inputs/s |"


async def measure(base_url: str, seconds: float) -> list[str]:
    url = f"{base_url}/v1/embeddings"
    rows = []
    async with httpx.AsyncClient(headers=AUTH, timeout=600) as client:
        await _latencies(client, url, 1, 2)  # loads the embedding instance
        alone = await _latencies(client, url, 1, seconds)
        rows.append(_row("1 input", 1, alone))
        rows.append(_row("32 inputs", 32, await _latencies(client, url, 32, seconds)))
        chat = asyncio.ensure_future(
            client.post(
                f"{base_url}/v1/chat/completions",
                json={
                    "model": "openclaw",
                    "messages": [{"role": "user", "content": "Tell a very long story."}],
                    "max_tokens": 400,
                    "temperature": 0,
                },
            )
        )
        await asyncio.sleep(1)  # the answer is being written
        during = await _latencies(client, url, 1, 600, beside=chat)
        rows.append(_row("1 input, during a 400-token chat answer", 1, during))
        answer = await chat
        answer.raise_for_status()
        done = answer.json()["usage"]["completion_tokens"]
        rows.append(f"| (the chat answer: {done} tokens) | | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = echo_config(Path(tmp))
        config["models"]["providers"] = {"local": {"api": "llama-cpp"}}
        config["agents"] = {"list": [{"id": "main", "default": True}]}
        stack = start_stack(Path(tmp), config)
        try:
            rows = asyncio.run(measure(stack.base_url, args.seconds))
        finally:
            stack.stop()
    print("| request | requests | median latency | throughput |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
