"""Many streams at once through one edge and two workers, in front of a stand-in that sends each
stream's tokens at a fixed pace (bench/slow_standin.py):

- `long-streams`: `--streams` streams (default 1,000), one token a second for a minute, as
  agents answering slowly do; opened over a ramp (`--open-per-second`, by default a tenth of
  the streams a second, at most 500).
- `fast-streams`: `--fast-streams` streams (default 200), 50 tokens a second for `--seconds`,
  as a fast model streams; all opened within a second.

The client holds every stream to its end and reads each token's send time from its text, so
the gap it reports is the whole way from the upstream's write to the client's read: stand-in to
worker, worker to edge over gRPC, edge to client, and the client's own event loop (it shares
the cores). Memory per stream is each process's RSS with every stream open, less its RSS before,
over the streams it holds; CPU is each process's CPU time over the run (fast-streams: per token
delivered, edge and workers apart).
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field

from bench.harness import CHAT_BODY, Row, cpu_seconds
from bench.stack import AUTH, Bench, answers
from devkit.observe import rss_kib
from devkit.processes import (
    echo_config,
    edge_answers,
    free_port,
    raise_open_files_limit,
    wait_until,
    worker_serving,
    write_config,
)

WORKERS = 2


@dataclass(frozen=True)
class Pace:
    streams: int
    tokens: int  # per stream
    token_seconds: float
    opened_per_second: int

    @property
    def planned_seconds(self) -> float:
        """From the first stream's first token to the last stream's last."""
        return self.streams / self.opened_per_second + self.tokens * self.token_seconds


# A delta's text: one or more send times ("1732800000.123456 "), as tokens that arrived
# together may leave in one delta.
_CONTENT = re.compile(rb'"content":"([\d. ]+)"')


@dataclass
class StreamsSeen:
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (sent at, gap)
    # (sent at, gap) of tokens sent while every stream was open, none opening or closing
    steady: tuple[float, float] = (0.0, 0.0)
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def failed(self, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1


def long_streams(bench: Bench) -> Row:
    count = bench.args.streams
    opened_per_second = bench.args.open_per_second or min(500, max(count // 10, 10))
    pace = Pace(count, 60, 1.0, opened_per_second)
    seen, per_stream, cpu, wall = _run(bench, pace)
    quantiles = percentiles(sorted(gap * 1000 for _, gap in seen.gaps))
    steady_ms = sorted(gap * 1000 for sent, gap in seen.gaps if in_range(sent, seen.steady))
    steady = percentiles(steady_ms)
    print(
        f"long streams: {count} at once, {pace.tokens} tokens {pace.token_seconds:g} s apart;"
        f" {seen.completed} completed, errors {sum(seen.errors.values())} {seen.errors or ''};"
        f" gap upstream -> client p50 {quantiles[49]:.1f} ms, p99 {quantiles[98]:.1f} ms"
        f" over {len(seen.gaps):,} tokens"
        f" (all open, none opening or closing: p50 {steady[49]:.1f} ms, p99 {steady[98]:.1f} ms"
        f" over {len(steady_ms):,});"
        " RSS per stream "
        + ", ".join(f"{name} {kb:.1f} KB" for name, kb in per_stream.items())
        + "; CPU (share of one core) "
        + ", ".join(f"{name} {seconds / wall:.0%}" for name, seconds in cpu.items())
        + " (goals: 0 errors, p99 <= 100 ms, <= 30 KB per stream on each process)",
        flush=True,
    )
    return Row(
        f"{count} long streams",
        0,
        quantiles[49],
        quantiles[98],
        sum(seen.errors.values()),
        None,
        {f"{name} KB/stream": kb for name, kb in per_stream.items()},
    )


def fast_streams(bench: Bench) -> Row:
    count, rate = bench.args.fast_streams, 50
    pace = Pace(count, max(int(bench.args.seconds * rate), 1), 1 / rate, max(count, 1))
    seen, _, cpu, wall = _run(bench, pace)
    tokens = len(seen.gaps)
    quantiles = percentiles(sorted(gap * 1000 for _, gap in seen.gaps))
    workers = sum(seconds for name, seconds in cpu.items() if name.startswith("worker"))
    per_token = {"edge": cpu["edge"], "workers": workers}
    print(
        f"fast streams: {count} at once, {pace.tokens} tokens at {rate} a second;"
        f" {seen.completed} completed, errors {sum(seen.errors.values())} {seen.errors or ''};"
        f" {tokens:,} tokens in {wall:.1f} s (planned {pace.planned_seconds:.1f} s):"
        f" {tokens / wall:,.0f} tokens/s; gap upstream -> client p50 {quantiles[49]:.1f} ms,"
        f" p99 {quantiles[98]:.1f} ms; CPU per token "
        + ", ".join(
            f"{name} {seconds / max(tokens, 1) * 1e6:.0f} µs" for name, seconds in per_token.items()
        )
        + f" (edge + workers {(cpu['edge'] + workers) / max(tokens, 1) * 1e6:.0f} µs); the client"
        f" {cpu['client'] / max(tokens, 1) * 1e6:.0f} µs, the stand-in"
        f" {cpu['stand-in'] / max(tokens, 1) * 1e6:.0f} µs",
        flush=True,
    )
    return Row(
        f"{count} fast streams",
        tokens / wall,
        quantiles[49],
        quantiles[98],
        sum(seen.errors.values()),
        None,
        cpu_us_per_request={
            name: seconds / max(tokens, 1) * 1e6 for name, seconds in per_token.items()
        },
    )


def _run(bench: Bench, pace: Pace) -> tuple[StreamsSeen, dict[str, float], dict[str, float], float]:
    """Runs the streams; returns what the client saw, RSS per stream (KB), CPU seconds per
    process over the run, and the run's wall time."""
    count = pace.streams
    # The client, the edge and the stand-in each hold one per stream.
    limit = raise_open_files_limit(count + 1000)
    if limit < count + 1000:
        sys.exit(f"long-streams: {count} streams need {count + 1000} open files (limit {limit})")
    upstream_port = free_port()
    standin = bench.process(
        [sys.executable, "-m", "bench.slow_standin", "--port", str(upstream_port)]
        + ["--tokens", str(pace.tokens), "--token-seconds", str(pace.token_seconds)],
        "slow-standin",
    )
    upstream = f"http://127.0.0.1:{upstream_port}"
    wait_until(lambda: answers(f"{upstream}/v1/models"), 20, "slow stand-in", standin)
    config = echo_config(bench.tmp)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(WORKERS)]
    config["gateway"]["workers"] = addresses
    config["worker"]["maxConcurrentTurns"] = count
    config["models"]["providers"]["standin"] = {
        "api": "openai-compatible",
        "baseUrl": f"{upstream}/v1",
    }
    config["agents"]["list"] = [{"id": "main", "default": True, "model": "standin/slow"}]
    path = write_config(bench.tmp, config, "long-streams.json5")
    level = ("--log-level", bench.args.log_level)
    processes = {}
    for index, address in enumerate(addresses, start=1):
        worker = bench.clawgate_process(
            path, [*level, "worker", "--listen", address], f"w{index}", bench.tree
        )
        wait_until(lambda a=address: worker_serving(a), 60, "worker", worker)  # type: ignore[misc]
        processes[f"worker {index}"] = worker
    edge = bench.clawgate_process(path, [*level, "edge"], "long-edge", bench.tree)
    port = config["gateway"]["port"]
    wait_until(lambda: edge_answers(f"http://127.0.0.1:{port}"), 30, "edge", edge)
    processes = {"edge": edge, **processes}
    pids = {name: process.pid for name, process in processes.items()}
    pids["stand-in"] = standin.pid

    # The client keeps every gap it reads (600,000 at 10,000 streams): its own garbage collector
    # walking them would show up as gaps of clawgate's.
    gc.disable()
    try:
        seen, rss_before, rss_open, cpu, wall = asyncio.run(
            _hold(port, pace, pids, list(processes))
        )
    finally:
        gc.enable()
    per_stream = {
        name: (rss_open[name] - rss_before[name]) / (count if name == "edge" else count / WORKERS)
        for name in rss_before
    }
    return seen, per_stream, cpu, wall


def _whole_frames(text: bytes) -> tuple[bytes, bytes]:
    end = text.rfind(b"\n\n") + 2
    return text[:end], text[end:]


def percentiles(values: list[float]) -> list[float]:
    return statistics.quantiles(values, n=100) if len(values) > 1 else [0.0] * 99


def in_range(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


async def _hold(
    port: int, pace: Pace, pids: dict[str, int], clawgate_processes: list[str]
) -> tuple[StreamsSeen, dict[str, int], dict[str, int], dict[str, float], float]:
    count = pace.streams
    body = json.dumps({**CHAT_BODY, "stream": True}).encode()
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in AUTH.items())
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    seen = StreamsSeen()

    async def one_stream() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as error:
            seen.failed(type(error).__name__)
            return
        try:
            writer.write(request)
            tokens, tail, status_ok, error_event = 0, b"", None, False
            while block := await reader.read(65536):
                arrived = time.time()
                if status_ok is None:
                    status_ok = block.startswith(b"HTTP/1.1 200")
                # Whole frames only: a frame cut between two reads is read with the next one.
                text, tail = _whole_frames(tail + block)
                for match in _CONTENT.finditer(text):
                    for sent_at in match.group(1).split():
                        sent = float(sent_at)
                        seen.gaps.append((sent, arrived - sent))
                        tokens += 1
                error_event = error_event or b'"error"' in text
                if b"data: [DONE]" in text:
                    break
            if not status_ok:
                seen.failed("status")
            elif error_event:
                seen.failed("error event")
            elif tokens < pace.tokens:
                seen.failed(f"ended after {tokens} tokens")
            else:
                seen.completed += 1
        except OSError as error:
            seen.failed(type(error).__name__)
        finally:
            writer.close()

    rss_before = {name: rss_kib(pids[name]) for name in clawgate_processes}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu_before["client"] = time.process_time()
    started = time.monotonic()
    # Opened evenly over the ramp, ten at a time, so that tokens of different streams leave the
    # stand-in spread over each token's interval (agents do not answer in step).
    per_second = pace.opened_per_second
    streams: list[asyncio.Task[None]] = []
    while len(streams) < count:
        streams += [asyncio.create_task(one_stream()) for _ in range(min(10, count - len(streams)))]
        await asyncio.sleep(10 / per_second)
    await asyncio.sleep(min(3, pace.tokens * pace.token_seconds / 3))  # all open, tokens flow
    rss_open = {name: rss_kib(pids[name]) for name in clawgate_processes}
    first_end = time.time() + started + pace.tokens * pace.token_seconds - time.monotonic()
    seen.steady = (time.time(), first_end - 2)
    await asyncio.gather(*streams)
    wall = time.monotonic() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    cpu["client"] = time.process_time() - cpu_before["client"]
    return seen, rss_before, rss_open, cpu, wall
