"""Benchmark scenarios, one command each; `all` runs every one in one go and prints ratios.

    python -m bench.run SCENARIO [--seconds 10] [--connections 32]

Scenarios: standin (the raw-ASGI floor), edge-echo (edge + echo worker answering at once),
edge-stub (edge + a stub gRPC server), worker (RunTurn over gRPC, no edge), pair and
pair-stream (edge + worker + openai-compatible provider + the stand-in), pair-tools (the same,
the stand-in answering with a tool call), pair-responses (the same pair through
/v1/responses, non-stream), pair-proxy (the same pair in trusted-proxy auth mode),
pair-anthropic (the same pair with an anthropic-messages provider), litellm and
litellm-stream (LiteLLM's proxy 1.108.0 in front of the same stand-in), portkey (Portkey's
gateway 1.15.2, non-stream), all (these thirteen); long-streams (many slow streams at once);
fast-streams (streams at 50 tokens a second: CPU per token, the gap each token adds);
idle-streams (RSS per open, idle stream), soak (RSS growth over 100,000 requests) and
pair-traced (`pair` exporting every span over OTLP/HTTP to a sink).
Each prints one table row (wrk -t1 -c32 for req/s and latency; a sequential asyncio client for
the median time to first token; peak RSS of each clawgate process).
`all` runs its scenarios three times, alternating, and then prints the median of each figure
(`--rounds` to change it): on a shared machine one run's floor or TTFT can be off by half.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import (
    CHAT_BODY,
    HEADER,
    Row,
    median_row,
    stop_on_interrupt,
)
from bench.long_runs import idle_streams, soak
from bench.long_streams import fast_streams, long_streams
from bench.stack import AUTH, LITELLM_VERSION, PORTKEY_VERSION, Bench, Tree, traced_to
from bench.worker_alone import worker_alone
from devkit.processes import REPO_ROOT


def scenario_standin(bench: Bench) -> Row:
    url = bench.standin()
    return bench.measure(
        "upstream stand-in alone (floor)", f"{url}/v1/chat/completions", {}, False, {}
    )


def scenario_edge_echo(bench: Bench) -> Row:
    url, processes = bench.clawgate_pair()
    return bench.measure(
        "edge + echo worker, non-stream", f"{url}/v1/chat/completions", AUTH, False, processes
    )


def scenario_edge_stub(bench: Bench) -> Row:
    url, processes = bench.clawgate_pair(stub=True)
    return bench.measure(
        "edge + stub gRPC server, non-stream", f"{url}/v1/chat/completions", AUTH, False, processes
    )


def _pair(bench: Bench, stream: bool) -> Row:
    url, processes = bench.clawgate_pair(upstream=bench.standin())
    name = f"clawgate pair, {'stream' if stream else 'non-stream'}"
    return bench.measure(name, f"{url}/v1/chat/completions", AUTH, stream, processes)


TOOLS_BODY: dict[str, object] = {
    **CHAT_BODY,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
}


RESPONSES_BODY: dict[str, object] = {"model": "openclaw", "input": "hello"}


def scenario_pair_responses(bench: Bench) -> Row:
    """The pair through POST /v1/responses (beside `pair`, the same turn through chat)."""
    url, processes = bench.clawgate_pair(upstream=bench.standin())
    name = "clawgate pair, /v1/responses, non-stream"
    return bench.measure(name, f"{url}/v1/responses", AUTH, False, processes, RESPONSES_BODY)


PROXY_HEADERS = {"x-forwarded-user": "bench-user", "x-forwarded-proto": "https"}


def _behind_a_proxy(config: dict[str, Any]) -> None:
    """Trusted-proxy auth as a team runs it: the bench's client stands for the proxy (its
    headers name the user) and people hold read and write, so every turn tells the worker
    whom it runs for and the worker checks the session's owner."""
    config["gateway"]["trustedProxies"] = ["127.0.0.1"]
    config["gateway"]["auth"] = {
        "mode": "trusted-proxy",
        "trustedProxy": {
            "userHeader": "x-forwarded-user",
            "requiredHeaders": ["x-forwarded-proto"],
            "allowLoopback": True,
            "defaultScopes": ["operator.read", "operator.write"],
        },
    }


def scenario_pair_proxy(bench: Bench) -> Row:
    """The pair in trusted-proxy mode (beside `pair`, the same turn with token auth)."""
    url, processes = bench.clawgate_pair(upstream=bench.standin(), change=_behind_a_proxy)
    name = "clawgate pair, trusted-proxy auth, non-stream"
    return bench.measure(name, f"{url}/v1/chat/completions", PROXY_HEADERS, False, processes)


def _on_anthropic(config: dict[str, Any]) -> None:
    """The agent's model behind the stand-in's Anthropic Messages route (same 16 words)."""
    upstream = config["models"]["providers"]["standin"]["baseUrl"].removesuffix("/v1")
    config["models"]["providers"]["claude"] = {
        "api": "anthropic-messages",
        "baseUrl": upstream,
        "apiKey": "bench",
    }
    config["agents"]["list"] = [{"id": "main", "default": True, "model": "claude/standin"}]


def scenario_pair_anthropic(bench: Bench) -> Row:
    """The pair with an `anthropic-messages` provider (beside `pair`: `openai-completions`)."""
    url, processes = bench.clawgate_pair(upstream=bench.standin(), change=_on_anthropic)
    name = "clawgate pair, anthropic-messages, non-stream"
    return bench.measure(name, f"{url}/v1/chat/completions", AUTH, False, processes)


def scenario_pair_traced(bench: Bench) -> Row:
    """`pair` with every span exported over OTLP/HTTP (to a sink that keeps nothing)."""
    rate = float(os.environ.get("CLAWGATE_BENCH_SAMPLE_RATE", "1"))
    url, processes = bench.clawgate_pair(
        upstream=bench.standin(), change=traced_to(bench.otlp_sink(), rate)
    )
    name = "clawgate pair, traced (100%), non-stream"
    return bench.measure(name, f"{url}/v1/chat/completions", AUTH, False, processes)


def scenario_pair_tools(bench: Bench) -> Row:
    """The pair when the model answers with a tool call (the stand-in's call, non-stream)."""
    url, processes = bench.clawgate_pair(upstream=bench.standin())
    name = "clawgate pair, tool call, non-stream"
    return bench.measure(name, f"{url}/v1/chat/completions", AUTH, False, processes, TOOLS_BODY)


def _litellm(bench: Bench, stream: bool) -> Row:
    url, process = bench.litellm(bench.standin())
    name = f"LiteLLM {LITELLM_VERSION}, {'stream' if stream else 'non-stream'}"
    return bench.measure(
        name, f"{url}/v1/chat/completions", {"Authorization": "Bearer unused"}, stream, {}
    )


def scenario_portkey(bench: Bench) -> Row:
    """Portkey's gateway, non-stream only: on this machine's Node 20 every streamed request
    through 1.15.2 fails (500, "TypeError: immutable"), so there is no stream figure to compare."""
    url, headers = bench.portkey(bench.standin())
    name = f"Portkey gateway {PORTKEY_VERSION}, non-stream"
    return bench.measure(name, f"{url}/v1/chat/completions", headers, False, {}, streams=False)


SCENARIOS: dict[str, Callable[[Bench], Row]] = {
    "standin": scenario_standin,
    "edge-echo": scenario_edge_echo,
    "edge-stub": scenario_edge_stub,
    "worker": worker_alone,
    "pair": lambda bench: _pair(bench, False),
    "pair-stream": lambda bench: _pair(bench, True),
    "pair-tools": scenario_pair_tools,
    "pair-responses": scenario_pair_responses,
    "pair-proxy": scenario_pair_proxy,
    "pair-anthropic": scenario_pair_anthropic,
    "litellm": lambda bench: _litellm(bench, False),
    "litellm-stream": lambda bench: _litellm(bench, True),
    "portkey": scenario_portkey,
    "idle-streams": idle_streams,
    "pair-traced": scenario_pair_traced,
}
ALL = [name for name in SCENARIOS if name not in ("idle-streams", "pair-traced")]
SCENARIOS["soak"] = soak
SCENARIOS["long-streams"] = long_streams
SCENARIOS["fast-streams"] = fast_streams


def summary(rows: dict[str, Row]) -> str:
    def ratio(a: str, b: str) -> str:
        return (
            f"{rows[a].requests_per_second / rows[b].requests_per_second:.2f}x"
            if a in rows and b in rows
            else "n/a"
        )

    parts = [f"edge+echo/floor {ratio('edge-echo', 'standin')} (goal >= 0.35x)"]
    parts.append(f"pair/LiteLLM {ratio('pair', 'litellm')} (goal >= 20x)")
    if "pair" in rows and "litellm" in rows:
        parts.append(
            f"p99 pair/LiteLLM {rows['pair'].p99_ms / rows['litellm'].p99_ms:.3f} (goal <= 0.1)"
        )
    parts.append(f"pair/Portkey {ratio('pair', 'portkey')} (goal >= 1.5x)")
    if "pair" in rows and "portkey" in rows:
        parts.append(
            f"p99 pair {rows['pair'].p99_ms:.1f} ms vs Portkey {rows['portkey'].p99_ms:.1f} ms"
            " (goal: lower)"
        )
    parts.append(
        f"pair-stream/LiteLLM-stream {ratio('pair-stream', 'litellm-stream')} (goal >= 30x)"
    )
    if "pair-stream" in rows and "standin" in rows:
        added = rows["pair-stream"].ttft_p50_ms - rows["standin"].ttft_p50_ms  # type: ignore[operator]
        parts.append(f"TTFT added by clawgate {added:.2f} ms (goal <= 1.5 ms)")
    return "summary: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ttft-samples", type=int, default=200)
    parser.add_argument(
        "--streams", type=int, default=1000, help="long-streams: streams held open at once"
    )
    parser.add_argument(
        "--fast-streams", type=int, default=200, help="fast-streams: streams at 50 tokens/s"
    )
    parser.add_argument(
        "--open-per-second", type=int, help="long-streams: streams opened a second (the ramp)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="run the scenarios this many times, alternating, and report medians"
        " (default 3 for all, else 1): one run's floor or TTFT can be off by half here",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        help="clawgate's log level (default info: what `clawgate up` runs with)",
    )
    parser.add_argument(
        "--base",
        type=Path,
        help="long-streams, fast-streams: run them on this checkout and on another in turn"
        " (ABBA over the rounds, default 4) and print the paired ratios",
    )
    parser.add_argument("--base-cli", default="clawgate.cli", help="with --base: its CLI module")
    args = parser.parse_args()
    if args.base is not None:
        streams_paired(args)
        return
    names = ALL if args.scenario == "all" else [args.scenario]
    rounds = args.rounds or (3 if args.scenario == "all" else 1)
    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s;"
        f" clawgate log level {args.log_level}; {os.cpu_count()} cores; {rounds} round(s)"
    )
    print(HEADER, flush=True)
    measured: dict[str, list[Row]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        stop_on_interrupt(Path(tmp))
        for _ in range(rounds):
            for name in names:
                bench = Bench(args, Path(tmp))
                with bench.stack:
                    measured[name].append(SCENARIOS[name](bench))
    rows = {name: median_row(results) for name, results in measured.items()}
    if rounds > 1:
        print(f"\nmedians of {rounds} rounds (errors: all rounds; peak RSS: the highest)")
        print(HEADER)
        for row in rows.values():
            print(row.markdown())
    if any(name in ALL for name in names):  # idle-streams and soak print their own line
        print(summary(rows))


def streams_paired(args: argparse.Namespace) -> None:
    """One streams scenario on this checkout and on `--base`, one after the other (each run
    needs the whole machine), in ABBA order across rounds; the ratios are this / base."""
    if args.scenario not in ("long-streams", "fast-streams"):
        sys.exit("--base is for long-streams and fast-streams; bench.paired pairs the others")
    base, this = Tree("base", args.base.resolve(), args.base_cli), Tree("this", REPO_ROOT)
    scenario = SCENARIOS[args.scenario]
    pairs: list[tuple[Row, Row]] = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        stop_on_interrupt(Path(tmp))
        for index in range(args.rounds or 4):
            ran: dict[str, Row] = {}
            for tree in (base, this) if index % 2 == 0 else (this, base):
                bench = Bench(args, Path(tmp), tree)
                with bench.stack:
                    row = ran[tree.name] = scenario(bench)
                row.scenario = f"{tree.name}: {row.scenario}"
                print(row.markdown(), flush=True)
            pairs.append((ran["base"], ran["this"]))

    def ratio(figure: Callable[[Row], float]) -> str:
        ratios = [figure(this) / figure(base) for base, this in pairs if figure(base)]
        return f"{statistics.median(ratios):.3f}" if ratios else "n/a"

    print(
        f"this / base, medians of {len(pairs)} paired rounds:"
        f" rate {ratio(lambda r: r.requests_per_second)}, p50 {ratio(lambda r: r.p50_ms)},"
        f" p99 {ratio(lambda r: r.p99_ms)},"
        f" CPU {ratio(lambda r: sum(r.cpu_us_per_request.values()))}"
    )


if __name__ == "__main__":
    main()
