"""This checkout against another, both up at once, in paired rounds.

    python -m bench.paired --base ../base [--base-cli services.cli] [--rounds 4] [--seconds 8]
    python -m bench.paired --base . --trace-this   # tracing's cost: off (base) vs on (this)
    python -m bench.paired --base . --limit-this   # limits' cost: off (base) vs on, in Redis

One stand-in; two pairs (edge + worker) in front of it, one from each checkout. Each round
runs every scenario on both pairs back to back, in ABBA order across rounds, so that both
versions see the same machine minute by minute; the ratio of each round (this / base) is
what is compared. Prints each run's row, then per scenario the medians and the median of the
paired ratios (req/s, p99, TTFT, CPU per request).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.harness import CHAT_BODY, HEADER, Row, stop_on_interrupt
from bench.run import RESPONSES_BODY
from bench.stack import AUTH, Bench, Tree, limited_by, traced_to
from devkit.processes import REPO_ROOT

SCENARIOS: dict[str, tuple[str, bool, dict[str, object]]] = {
    "pair": ("/v1/chat/completions", False, CHAT_BODY),
    "pair-stream": ("/v1/chat/completions", True, CHAT_BODY),
    "pair-responses": ("/v1/responses", False, RESPONSES_BODY),
}


def _ratio(rows: list[tuple[Row, Row]], figure: str) -> str:
    ratios = [
        getattr(this, figure) / getattr(base, figure)
        for base, this in rows
        if getattr(base, figure) and getattr(this, figure) is not None
    ]
    return f"{statistics.median(ratios):.3f}" if ratios else "n/a"


def _cpu(row: Row) -> float:
    return sum(row.cpu_us_per_request.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--base-cli", default="clawgate.cli", help="its CLI module")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ttft-samples", type=int, default=200)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--trace-this",
        action="store_true",
        help="this checkout's pair exports its spans (OTLP/HTTP) to a sink",
    )
    parser.add_argument("--sample-rate", type=float, default=1.0, help="with --trace-this")
    parser.add_argument(
        "--limit-this",
        action="store_true",
        help="this checkout's pair with every limit on, counted in --limits-store",
    )
    parser.add_argument(
        "--limits-store", default="redis://127.0.0.1:6379/13", help='a Redis URL, or "local"'
    )
    args = parser.parse_args()
    trees = {
        "base": Tree("base", args.base.resolve(), args.base_cli),
        "this": Tree("this", REPO_ROOT),
    }
    paired: dict[str, list[tuple[Row, Row]]] = {name: [] for name in SCENARIOS}
    with tempfile.TemporaryDirectory() as tmp:
        stop_on_interrupt(Path(tmp))
        bench = Bench(args, Path(tmp))
        with bench.stack:
            upstream = bench.standin()
            change = None
            if args.trace_this:
                change = traced_to(bench.otlp_sink(), args.sample_rate)
            elif args.limit_this:
                change = limited_by(args.limits_store)
            pairs = {
                name: bench.clawgate_pair(
                    upstream, tree=tree, change=change if name == "this" else None
                )
                for name, tree in trees.items()
            }
            print(HEADER, flush=True)
            for round_number in range(args.rounds):
                order = ["base", "this"] if round_number % 2 == 0 else ["this", "base"]
                for scenario, (path, stream, body) in SCENARIOS.items():
                    rows: dict[str, Row] = {}
                    for name in order:
                        url, processes = pairs[name]
                        rows[name] = bench.measure(
                            f"{name}: {scenario}", f"{url}{path}", AUTH, stream, processes, body
                        )
                    paired[scenario].append((rows["base"], rows["this"]))
    print("\nscenario | req/s base → this | paired ratios this/base: req/s, p99, TTFT, CPU/req")
    for scenario, runs in paired.items():
        base_rate = statistics.median(base.requests_per_second for base, _ in runs)
        this_rate = statistics.median(this.requests_per_second for _, this in runs)
        cpu_ratios = [_cpu(this) / _cpu(base) for base, this in runs if _cpu(base)]
        print(
            f"{scenario} | {base_rate:,.0f} → {this_rate:,.0f} |"
            f" {_ratio(runs, 'requests_per_second')}, {_ratio(runs, 'p99_ms')},"
            f" {_ratio(runs, 'ttft_p50_ms')}, {statistics.median(cpu_ratios):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
