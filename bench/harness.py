"""What the benchmark scenarios share: wrk with a Lua script, a time-to-first-token client,
peak memory of processes, and one table row per scenario."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devkit.observe import child_pids, peak_rss_kib

CHAT_BODY: dict[str, object] = {
    "model": "openclaw",
    "messages": [{"role": "user", "content": "hi"}],
}
# The first non-empty text: a chat chunk's content, or a Responses output_text delta (a chat
# chunk's "delta" is an object, so it never matches).
FIRST_TOKEN = re.compile(rb'"(?:content|delta)":\s*"[^"]')


@dataclass
class Row:
    scenario: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    ttft_p50_ms: float | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)

    def markdown(self) -> str:
        ttft = f"{self.ttft_p50_ms:.2f} ms" if self.ttft_p50_ms is not None else "—"
        rss = ", ".join(f"{name} {mb:.0f} MB" for name, mb in self.peak_rss_mb.items()) or "—"
        cpu = ", ".join(f"{name} {us:.0f}" for name, us in self.cpu_us_per_request.items()) or "—"
        return (
            f"| {self.scenario} | {self.requests_per_second:,.0f} | {self.p50_ms:.1f} ms"
            f" | {self.p99_ms:.1f} ms | {self.errors} | {ttft} | {rss} | {cpu} |"
        )


def median_row(rows: Sequence[Row]) -> Row:
    """One scenario over several rounds: the median of each figure, the errors of all rounds
    and the highest peak RSS."""
    ttfts = [row.ttft_p50_ms for row in rows if row.ttft_p50_ms is not None]
    return Row(
        rows[0].scenario,
        statistics.median(row.requests_per_second for row in rows),
        statistics.median(row.p50_ms for row in rows),
        statistics.median(row.p99_ms for row in rows),
        sum(row.errors for row in rows),
        statistics.median(ttfts) if len(ttfts) == len(rows) else None,
        {name: max(row.peak_rss_mb[name] for row in rows) for name in rows[0].peak_rss_mb},
        {
            name: statistics.median(row.cpu_us_per_request[name] for row in rows)
            for name in rows[0].cpu_us_per_request
        },
    )


HEADER = (
    "| scenario | req/s | p50 | p99 | errors/timeouts | TTFT p50 (c=1) | peak RSS"
    " | CPU µs per request |\n"
    "|---|---|---|---|---|---|---|---|"
)


def stop_on_interrupt(tmp: Path, grace_seconds: float = 20) -> None:
    """From now on SIGTERM or SIGINT stops every process this one started, removes `tmp` and
    exits with 128 + the signal. By default SIGTERM ends Python at once, and the processes lived
    on.

    The handler does the work itself rather than raise SystemExit or KeyboardInterrupt: Python
    drops an exception raised while a weakref callback or `__del__` runs (grpc.aio runs many),
    and the run then went on to its end. It uses os-level calls only, since the code it
    interrupted may hold a Popen's lock."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            _stop_children(grace_seconds)
            shutil.rmtree(tmp, ignore_errors=True)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


def _stop_children(grace_seconds: float) -> None:
    children = set(child_pids(os.getpid()))
    for pid in children:
        _send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while children and time.monotonic() < deadline:
        children = {pid for pid in children if not _reaped(pid)}
        time.sleep(0.02)
    for pid in children:
        _send(pid, signal.SIGKILL)


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # reaped already
        return True


def wrk_lua(body: dict[str, object], headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = [[{json.dumps(body)}]]"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    url: str,
    body: dict[str, object],
    headers: dict[str, str],
    seconds: float,
    connections: int = 32,
) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, non-2xx + socket errors) from `wrk -t1 -c<connections>`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_lua(body, {"Content-Type": "application/json", **headers}))
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    Path(script.name).unlink()
    return parse_wrk(output)


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """req/s, p50 ms, p99 ms and errors from `wrk --latency` output. Percentiles are read from
    the start of their lines: a stdev column like `73.99%` must not pass for the 99th."""
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return rate, p50, p99, errors


async def _first_token_ms(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str]
) -> float:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    started = time.perf_counter()
    writer.write(request)
    seen = b""
    while not FIRST_TOKEN.search(seen):
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"no content token in the answer: {seen[:300]!r}")
        seen += chunk
    elapsed = (time.perf_counter() - started) * 1000
    writer.close()
    return elapsed


def ttft_p50(
    url: str, body: dict[str, object], headers: dict[str, str], samples: int = 200
) -> float:
    """Median time to the first content token over `samples` sequential streamed requests."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    payload = json.dumps({**body, "stream": True}).encode()

    async def measure() -> list[float]:
        for _ in range(20):  # warm up
            await _first_token_ms(host, int(port), "/" + path, payload, headers)
        return [
            await _first_token_ms(host, int(port), "/" + path, payload, headers)
            for _ in range(samples)
        ]

    return statistics.median(asyncio.run(measure()))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    return peak_rss_kib(pid) / 1024
