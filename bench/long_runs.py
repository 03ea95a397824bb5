"""The scenarios that measure memory over time rather than speed: idle streams and a soak."""

from __future__ import annotations

import asyncio
import json

from bench.harness import CHAT_BODY, Row, run_wrk
from bench.stack import AUTH, Bench
from devkit.observe import rss_kib
from devkit.processes import (
    TOKEN,
    clawgate,
    echo_config,
    edge_answers,
    raise_open_files_limit,
    wait_until,
    worker_serving,
    write_config,
)


def idle_streams(bench: Bench, count: int = 1000) -> Row:
    """RSS per open, idle stream: `count` streams that got their first word and then wait."""
    raise_open_files_limit(8192)
    config = echo_config(bench.tmp)
    config["models"]["providers"]["echo"] = {
        "api": "echo",
        "reply": "first second",
        "delayMs": 600_000,
    }
    config["agents"]["list"] = [{"id": "main", "default": True}]
    config["worker"]["maxConcurrentTurns"] = count * 2
    path = write_config(bench.tmp, config, "idle.json5")
    address = config["worker"]["listen"]
    level = ("--log-level", bench.args.log_level)
    worker = bench.process(clawgate(path, *level, "worker"), "idle-worker")
    wait_until(lambda: worker_serving(address), 60, "worker", worker)
    edge = bench.process(clawgate(path, *level, "edge"), "idle-edge")
    port = config["gateway"]["port"]
    wait_until(lambda: edge_answers(f"http://127.0.0.1:{port}"), 30, "edge", edge)
    body = json.dumps({**CHAT_BODY, "stream": True}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def hold_streams() -> dict[str, float]:
        async def open_one() -> asyncio.StreamWriter:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            seen = b""
            while b'"content":"first' not in seen:
                seen += await reader.read(4096)
            return writer

        for _ in range(20):  # warm up, then measure from a settled baseline
            (await open_one()).close()
        await asyncio.sleep(1)
        before = {"edge": rss_kib(edge.pid), "worker": rss_kib(worker.pid)}
        writers = []
        for _ in range(count // 50):
            writers += await asyncio.gather(*(open_one() for _ in range(50)))
        await asyncio.sleep(1)
        after = {"edge": rss_kib(edge.pid), "worker": rss_kib(worker.pid)}
        for writer in writers:
            writer.close()
        return {name: (after[name] - before[name]) / count for name in before}

    per_stream = asyncio.run(hold_streams())
    print(
        f"idle streams: {count} open; RSS per stream: edge {per_stream['edge']:.1f} KB,"
        f" worker {per_stream['worker']:.1f} KB (goal <= 50 KB each)",
        flush=True,
    )
    return Row(
        f"{count} idle streams",
        0,
        0,
        0,
        0,
        None,
        {"edge KB/stream": per_stream["edge"], "worker KB/stream": per_stream["worker"]},
    )


def soak(bench: Bench, target: int = 100_000) -> Row:
    """RSS growth of edge and worker over `target` requests (edge + echo worker, non-stream),
    from after a warm-up slice to the end; wrk runs in 10 s slices until the target is met."""
    url, processes = bench.clawgate_pair()
    chat_url = f"{url}/v1/chat/completions"
    rate, *_ = run_wrk(chat_url, CHAT_BODY, AUTH, 10, bench.args.connections)
    sent = int(rate * 10)
    warm = {name: rss_kib(process.pid) for name, process in processes.items()}
    while sent < target:
        rate, _, _, errors = run_wrk(chat_url, CHAT_BODY, AUTH, 10, bench.args.connections)
        sent += int(rate * 10)
    end = {name: rss_kib(process.pid) for name, process in processes.items()}
    growth = {name: (end[name] - warm[name]) / warm[name] * 100 for name in warm}
    print(
        f"soak: {sent:,} requests; RSS after warm-up -> end: "
        + ", ".join(
            f"{n} {warm[n] / 1024:.0f} -> {end[n] / 1024:.0f} MB ({growth[n]:+.1f}%)" for n in warm
        )
        + " (goal <= +10%)",
        flush=True,
    )
    return Row(f"soak, {sent:,} requests", 0, 0, 0, 0)
