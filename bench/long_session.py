"""One long session through a real edge and worker: turns/s and turn times with compaction
(the model's window is 4,096 tokens, each turn ~270) and without (a window that never fills),
against an OpenAI-compatible stand-in that enforces its window (devkit/windowed_upstream.py).

    python -m bench.long_session [--turns 1000] [--window 4096]

Prints one markdown row per scenario: turns/s, p50/p99 turn time, compactions, their own time
(p50/p99, from the worker's `compacted:` log lines) and the requests the stand-in refused.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from devkit.processes import TOKEN, echo_config, start_stack
from devkit.windowed_upstream import WindowedUpstream

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "
NO_LIMIT = 10_000_000
_COMPACTED = re.compile(r"compacted: .* (\d+) ms$", re.MULTILINE)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def run(name: str, turns: int, window: int, catalog_window: int, tmp: Path) -> str:
    with WindowedUpstream(window) as upstream:
        config = echo_config(tmp)
        config["models"]["providers"]["windowed"] = {
            "api": "openai-compatible",
            "baseUrl": upstream.base_url,
            "models": [{"id": "m", "contextWindow": catalog_window}],
        }
        config["agents"]["list"] = [{"id": "main", "default": True, "model": "windowed/m"}]
        stack = start_stack(tmp, config)
        try:
            times: list[float] = []
            with httpx.Client(
                base_url=stack.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as client:
                started = time.perf_counter()
                for number in range(turns):
                    asked = time.perf_counter()
                    response = client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "openclaw",
                            "user": "long",
                            "messages": [
                                {"role": "user", "content": f"Turn {number}. {SENTENCE * 17}"}
                            ],
                        },
                        timeout=60,
                    )
                    response.raise_for_status()
                    times.append(time.perf_counter() - asked)
                elapsed = time.perf_counter() - started
            time.sleep(0.5)  # the last log lines reach the file
            compactions = [float(ms) for ms in _COMPACTED.findall(stack.worker.log())]
        finally:
            stack.stop()
    return (
        f"| {name} | {turns / elapsed:,.0f} | {statistics.median(times) * 1000:.1f} |"
        f" {percentile(times, 0.99) * 1000:.1f} | {len(compactions)} |"
        f" {percentile(compactions, 0.5):.0f} | {percentile(compactions, 0.99):.0f} |"
        f" {upstream.overflows} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--window", type=int, default=4096)
    args = parser.parse_args()
    print(
        "| scenario | turns/s | p50 ms | p99 ms | compactions | compaction p50 ms"
        " | compaction p99 ms | refused |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        print(
            run(
                f"window {args.window}: compaction",
                args.turns,
                args.window,
                args.window,
                Path(first),
            ),
            flush=True,
        )
        print(
            run("window never fills: no compaction", args.turns, NO_LIMIT, NO_LIMIT, Path(second)),
            flush=True,
        )


if __name__ == "__main__":
    main()
