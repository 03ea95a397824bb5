"""What the scenarios start: the stand-in, clawgate's processes and LiteLLM's proxy, all
stopped with the bench; and `measure`, one wrk run plus the time to first token."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    CHAT_BODY,
    Row,
    cpu_seconds,
    peak_rss_mb,
    run_wrk,
    ttft_p50,
)
from devkit.processes import (
    TOKEN,
    Process,
    clawgate,
    echo_config,
    edge_answers,
    free_port,
    wait_until,
    worker_serving,
    write_config,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LITELLM_VERSION = "1.108.0"
LITELLM_KEY = "sk-unused"
LITELLM_OPEN = "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"
PORTKEY_VERSION = "1.15.2"
PORTKEY_DIR = Path(
    os.environ.get("CLAWGATE_BENCH_PORTKEY_DIR", Path.home() / ".cache/clawgate-bench/portkey")
)
LITELLM_VENV = Path(
    os.environ.get(
        "CLAWGATE_BENCH_LITELLM_VENV", Path.home() / ".cache/clawgate-bench/litellm-venv"
    )
)


@dataclass(frozen=True)
class Tree:
    """Another checkout of clawgate to run (an older commit, say), and its CLI module."""

    name: str
    path: Path
    cli: str = "clawgate.cli"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, tree: Tree | None = None) -> None:
        self.args = args
        self.tmp = tmp
        self.stack = ExitStack()
        self.tree = tree  # the checkout whose clawgate the streams scenarios run (None: this)

    def process(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> Process:
        process = Process(argv, self.tmp / f"{name}.log", env or {}).start()
        self.stack.callback(process.stop)
        return process

    def standin(self) -> str:
        return self._local_server("bench.upstream_standin", "standin", "/v1/models")

    def otlp_sink(self) -> str:
        return self._local_server("bench.otlp_sink", "otlp-sink", "/v1/traces")

    def _local_server(self, module: str, name: str, probe_path: str) -> str:
        """One of bench's own servers (`--port`), once `probe_path` answers; its base URL."""
        port = free_port()
        process = self.process([sys.executable, "-m", module, "--port", str(port)], name)
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{base_url}{probe_path}"), 20, name, process)
        return base_url

    def clawgate_pair(
        self,
        upstream: str | None = None,
        stub: bool = False,
        tree: Tree | None = None,
        change: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[str, dict[str, Process]]:
        """An edge and a worker (or the stub) in front of `upstream`; from another checkout
        when `tree` is given (bench/paired.py); `change` edits the config first."""
        config = echo_config(self.tmp)
        config["models"]["providers"]["echo"] = {
            "api": "echo",
            "reply": " ".join(f"w{i}" for i in range(16)),
        }
        config["agents"]["list"] = [{"id": "main", "default": True}]
        config["sessions"] = {"store": f"sqlite:///{self.tmp / f'bench-{free_port()}.db'}"}
        config["worker"]["maxConcurrentTurns"] = 1024
        config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
        if upstream:
            config["models"]["providers"]["standin"] = {
                "api": "openai-compatible",
                "baseUrl": f"{upstream}/v1",
            }
            config["agents"]["list"] = [{"id": "main", "default": True, "model": "standin/standin"}]
        if change is not None:
            change(config)
        path = write_config(self.tmp, config, f"bench-{config['gateway']['port']}.json5")
        address = config["worker"]["listen"]
        level = ("--log-level", self.args.log_level)
        if stub:
            worker = self.process(
                [sys.executable, "-m", "bench.stub_worker", "--listen", address], "stub"
            )
        else:
            worker = self.clawgate_process(path, [*level, "worker"], "worker", tree)
        wait_until(lambda: worker_serving(address), 60, "worker", worker)
        edge = self.clawgate_process(path, [*level, "edge"], "edge", tree)
        base_url = f"http://127.0.0.1:{config['gateway']['port']}"
        wait_until(lambda: edge_answers(base_url), 30, "edge", edge)
        return base_url, {"edge": edge, "stub" if stub else "worker": worker}

    def clawgate_process(
        self, config: Path, args: list[str], role: str, tree: Tree | None
    ) -> Process:
        if tree is None:
            return self.process(clawgate(config, *args), role)
        # -P: the tree's packages, not this checkout's (the working directory), come first.
        argv = [sys.executable, "-P", "-m", tree.cli, "--config", str(config), *args]
        return self.process(argv, f"{tree.name}-{role}", {"PYTHONPATH": str(tree.path)})

    def litellm(self, upstream: str) -> tuple[str, Process]:
        binary = ensure_litellm()
        port = free_port()
        config = self.tmp / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: openclaw\n    litellm_params:\n"
            f"      model: openai/standin\n      api_base: {upstream}/v1\n      api_key: unused\n"
        )
        argv = [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        # A benchmark on loopback: no master key (it would need LiteLLM's database).
        process = Process(argv, self.tmp / "litellm.log", {LITELLM_OPEN: "true"}).start()
        self.stack.callback(process.stop)
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{base_url}/health/liveliness"), 180, "litellm", process)
        return base_url, process

    def portkey(self, upstream: str) -> tuple[str, dict[str, str]]:
        """Portkey's gateway (Node) routed to the stand-in; the headers every request needs."""
        script = ensure_portkey()
        port = free_port()
        process = self.process(["node", str(script), f"--port={port}", "--headless"], "portkey")
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{base_url}/"), 60, "portkey", process)
        headers = {
            "Authorization": "Bearer unused",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{upstream}/v1",
        }
        return base_url, headers

    def measure(
        self,
        name: str,
        url: str,
        headers: dict[str, str],
        stream: bool,
        processes: dict[str, Process],
        request: dict[str, object] = CHAT_BODY,
        streams: bool = True,
    ) -> Row:
        """One wrk run; with `streams`, also the median time to first token of streamed
        requests (a peer that cannot stream has none)."""
        body: dict[str, object] = {**request, "stream": True} if stream else request
        run_wrk(url, body, headers, 2, self.args.connections)  # warm-up: connections, lazy imports
        cpu_before = {role: cpu_seconds(process.pid) for role, process in processes.items()}
        rate, p50, p99, errors = run_wrk(
            url, body, headers, self.args.seconds, self.args.connections
        )
        requests = max(rate * self.args.seconds, 1)
        cpu = {
            role: (cpu_seconds(process.pid) - cpu_before[role]) / requests * 1e6
            for role, process in processes.items()
        }
        ttft = ttft_p50(url, request, headers, self.args.ttft_samples) if streams else None
        rss = {role: peak_rss_mb(process.pid) for role, process in processes.items()}
        row = Row(name, rate, p50, p99, errors, ttft, rss, cpu)
        print(row.markdown(), flush=True)
        return row


def traced_to(endpoint: str, sample_rate: float = 1) -> Callable[[dict[str, Any]], None]:
    """A config change: traces (`sample_rate` of them) exported to `endpoint` (OTLP/HTTP)."""

    def change(config: dict[str, Any]) -> None:
        config["diagnostics"] = {"otel": {"endpoint": endpoint, "sampleRate": sample_rate}}

    return change


# Every limit on and none reached: each request takes the whole admission path (requests and
# budgets read in one pipeline, a place taken and given back, the spend charged).
LIMITS_ON = {
    "concurrentTurns": 1_000_000,
    "requestsPerMinute": 1_000_000_000,
    "tokensPerMinute": 10**15,
    "tokensPerDay": 10**15,
    "usdPerDay": 10**9,
    "usdPerMonth": 10**9,
}


def limited_by(store: str) -> Callable[[dict[str, Any]], None]:
    """A config change: every limit of `gateway.limits` on, counted in `store` (Redis; "local":
    in the edge's process)."""

    def change(config: dict[str, Any]) -> None:
        limits: dict[str, Any] = {"default": LIMITS_ON}
        if store != "local":
            limits["store"] = store
        config["gateway"]["limits"] = limits

    return change


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print(
            f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (about 90 s)...",
            file=sys.stderr,
        )
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [
                str(LITELLM_VENV / "bin" / "pip"),
                "install",
                "-q",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
            check=True,
        )
    return binary


def ensure_portkey() -> Path:
    script = PORTKEY_DIR / "node_modules/@portkey-ai/gateway/build/start-server.js"
    if not script.exists():
        print(
            f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {PORTKEY_DIR}...",
            file=sys.stderr,
        )
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
            cwd=PORTKEY_DIR,
            check=True,
        )
    return script
