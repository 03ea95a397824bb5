"""Throughput with 1, 2 and 3 workers behind one edge, the workers being the bottleneck.

Each worker runs the echo provider with a per-token delay and at most `--turns-per-worker`
turns at once, so one worker completes about turns_per_worker / turn_seconds turns per second
and the edge has plenty of room. A fixed pool of clients sends non-stream requests on fresh
sessions for `--seconds` per run and retries a 429 after a short pause.

    python -m bench.scale_workers [--seconds 10] [--clients 48] [--store sqlite|postgresql]

Prints one table row per worker count and a closing summary with the speed-up ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import stop_on_interrupt
from devkit.processes import (
    POSTGRES_URL,
    TOKEN,
    Process,
    clawgate,
    echo_config,
    free_port,
    start_edge,
    wait_until,
    worker_serving,
    write_config,
)

REPLY_WORDS = 20


async def load(base_url: str, clients: int, seconds: float) -> tuple[int, int, list[float]]:
    """Completed turns, 429 answers and latencies (s) of completed turns."""
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    rejected = 0
    body = {"model": "openclaw:main", "messages": [{"role": "user", "content": "go"}]}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one_client() -> None:
            nonlocal rejected
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = await client.post(
                    "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                )
                if response.status_code == 429:
                    rejected += 1
                    await asyncio.sleep(0.02)
                    continue
                response.raise_for_status()
                latencies.append(time.monotonic() - started)

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return len(latencies), rejected, latencies


def run(worker_count: int, args: argparse.Namespace, tmp_path: Path) -> float:
    config = echo_config(tmp_path)
    config["models"]["providers"]["echo"] = {
        "api": "echo",
        "reply": " ".join(["word"] * REPLY_WORDS),
        "delayMs": args.token_delay_ms,
    }
    config["agents"]["list"] = [{"id": "main", "default": True}]
    config["worker"]["maxConcurrentTurns"] = args.turns_per_worker
    if args.store == "postgresql":
        config["sessions"] = {"store": POSTGRES_URL}
    else:
        config["sessions"] = {"store": f"sqlite:///{tmp_path / f'bench-{worker_count}.db'}"}
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(worker_count)]
    config["gateway"]["workers"] = addresses
    path = write_config(tmp_path, config, f"bench-{worker_count}.json5")
    workers = [
        Process(
            clawgate(path, "--log-level", "warning", "worker", "--listen", a),
            tmp_path / f"w{i}.log",
        ).start()
        for i, a in enumerate(addresses)
    ]
    base_url = f"http://127.0.0.1:{config['gateway']['port']}"
    edge = None
    try:
        for worker, address in zip(workers, addresses, strict=True):
            wait_until(lambda a=address: worker_serving(a), 60, "worker", worker)  # type: ignore[misc]
        edge = start_edge(path, base_url, tmp_path / "edge.log")
        completed, rejected, latencies = asyncio.run(load(base_url, args.clients, args.seconds))
    finally:
        if edge is not None:
            edge.stop()
        for worker in workers:
            worker.stop()
    rate = completed / args.seconds
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"| {worker_count} | {rate:,.1f} | {quantiles[49] * 1000:,.0f} ms"
        f" | {quantiles[98] * 1000:,.0f} ms | {rejected:,} |",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--turns-per-worker", type=int, default=16)
    parser.add_argument("--token-delay-ms", type=float, default=20)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    turn_seconds = (REPLY_WORDS - 1) * args.token_delay_ms / 1000
    print(
        f"echo turns of {REPLY_WORDS} tokens, {args.token_delay_ms:g} ms apart"
        f" (~{turn_seconds:.2f} s); {args.turns_per_worker} turns per worker;"
        f" {args.clients} clients;"
        f" {args.seconds:g} s per run; store {args.store}"
    )
    print("| workers | turns/s | p50 | p99 | 429s (retried) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        stop_on_interrupt(Path(tmp))
        rates = {count: run(count, args, Path(tmp)) for count in args.workers}
    base = rates[min(rates)]
    ratios = ", ".join(f"{count} workers {rate / base:.2f}x" for count, rate in rates.items())
    ceiling = args.turns_per_worker / turn_seconds
    print(
        f"summary: {ratios} the throughput of {min(rates)}"
        f" (ceiling per worker ~{ceiling:.0f} turns/s)"
    )


if __name__ == "__main__":
    main()
