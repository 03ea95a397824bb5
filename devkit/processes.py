"""Starts real clawgate processes (`python -m clawgate.cli …`) and waits until they serve."""

from __future__ import annotations

import copy
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import json5
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "CLAWGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (`clawgate up --workers N` listens on the
    configured port and the ones after it)."""
    for _ in range(100):
        first = free_port()
        sockets = [socket.socket() for _ in range(count)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


def echo_config(tmp_path: Path, upstream_url: str | None = None) -> dict[str, Any]:
    """A config on free ports with echo agents `main` (default), `beta` and `slow`; given an
    upstream stand-in, also `vision` (answers), `flaky` (breaks off after one chunk) and
    `sluggish` (slower than its provider's timeout)."""
    worker = f"127.0.0.1:{free_port()}"
    config: dict[str, Any] = {
        "gateway": {
            "port": free_port(),
            "auth": {"mode": "token", "token": TOKEN},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            "workers": [worker],
        },
        "worker": {"listen": worker},
        "sessions": {"store": f"sqlite:///{tmp_path / 'sessions.db'}"},
        "models": {
            "providers": {
                "echo": {"api": "echo", "reply": "echo: {input} [turns={turns}]"},
                "slowecho": {"api": "echo", "reply": "slow {input}", "delayMs": 700},
            }
        },
        "agents": {
            "defaults": {"model": "echo/echo-1", "systemPrompt": "You are an echo."},
            "list": [
                {"id": "main", "default": True},
                {"id": "beta"},
                {"id": "slow", "model": "slowecho/slow-1"},
            ],
        },
    }
    if upstream_url is not None:
        providers = config["models"]["providers"]
        providers["upstream"] = {"api": "openai-compatible", "baseUrl": upstream_url}
        providers["impatient"] = {
            "api": "openai-compatible",
            "baseUrl": upstream_url,
            "timeoutSeconds": 0.5,
        }
        config["agents"]["list"] += [
            {"id": "vision", "model": "upstream/m"},
            {"id": "flaky", "model": "upstream/break-after-1"},
            {"id": "sluggish", "model": "impatient/slow-1000"},
        ]
    return config


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "clawgate.json5") -> Path:
    path = tmp_path / name
    path.write_text(json5.dumps(config, indent=2))
    return path


@dataclass
class Process:
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def raise_open_files_limit(wanted: int) -> int:
    """Raises this process's open-files limit toward `wanted` (up to the hard limit), for it and
    the processes it starts after; returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def clawgate(config_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "clawgate.cli", "--config", str(config_path), *args]


def wait_until(predicate: Any, timeout: float, what: str, process: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise AssertionError(f"{what}: the process exited:\n{process.log()}")
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not ready after {timeout}s\n{process.log() if process else ''}")


def worker_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def edge_answers(base_url: str, path: str = "/readyz") -> bool:
    try:
        return httpx.get(f"{base_url}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_worker(
    config_path: Path,
    address: str,
    log_path: Path,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> Process:
    process = Process(clawgate(config_path, "worker"), log_path, env or {}).start()
    wait_until(lambda: worker_serving(address), timeout, f"worker {address}", process)
    return process


def start_edge(
    config_path: Path,
    base_url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
) -> Process:
    """Starts an edge and waits for `ready_path` (use /healthz when no worker is up)."""
    process = Process(clawgate(config_path, "edge"), log_path, env or {}).start()
    wait_until(lambda: edge_answers(base_url, ready_path), 30, f"edge {base_url}", process)
    return process


@dataclass
class Stack:
    """A running worker + edge on one config."""

    config: dict[str, Any]
    config_path: Path
    worker: Process
    edge: Process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config['gateway']['port']}"

    @property
    def worker_address(self) -> str:
        return str(self.config["worker"]["listen"])

    def restart_worker(self) -> None:
        """Restarts the worker and waits until the edge has seen it come back."""
        self.worker.stop()
        self.worker = start_worker(self.config_path, self.worker_address, self.worker.log_path)
        wait_until(lambda: edge_answers(self.base_url), 10, "edge sees the worker", self.edge)

    def stop(self) -> None:
        self.edge.stop()
        self.worker.stop()


def start_stack(tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> Stack:
    """`env`: more environment variables for both processes."""
    config_path = write_config(tmp_path, config)
    worker = start_worker(config_path, config["worker"]["listen"], tmp_path / "worker.log", env=env)
    try:
        base_url = f"http://127.0.0.1:{config['gateway']['port']}"
        edge = start_edge(config_path, base_url, tmp_path / "edge.log", env)
    except BaseException:
        worker.stop()
        raise
    return Stack(config, config_path, worker, edge)


@contextmanager
def extra_edge(
    tmp_path: Path,
    config: dict[str, Any],
    change: Callable[[dict[str, Any]], None],
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
) -> Iterator[str]:
    """Another edge process on a changed copy of `config` (same workers); yields its base URL."""
    config = copy.deepcopy(config)
    config["gateway"]["port"] = port = free_port()
    change(config)
    path = write_config(tmp_path, config, f"edge-{port}.json5")
    base_url = f"http://127.0.0.1:{port}"
    edge = start_edge(path, base_url, tmp_path / f"edge-{port}.log", env, ready_path)
    try:
        yield base_url
    finally:
        edge.stop()


def start_up_with_fresh_home(
    tmp_path: Path, edit_starter: Callable[[str], str] | None = None
) -> tuple[Process, Path]:
    """`clawgate up` as a newcomer runs it (a fresh HOME, no config), once it says it is ready;
    returns the process and the HOME. `edit_starter`: the starter config is written first and
    changed by it (the defaults stay those of `clawgate up`)."""
    home = tmp_path / "home"
    home.mkdir()
    if edit_starter is not None:
        from clawgate.supervisor import write_starter_config

        config = home / ".clawgate" / "clawgate.json5"
        write_starter_config(config)
        config.write_text(edit_starter(config.read_text()))
    env = {"HOME": str(home), "CLAWGATE_CONFIG": ""}
    up = Process([sys.executable, "-m", "clawgate.cli", "up"], tmp_path / "up.log", env).start()
    try:
        wait_until(lambda: "chat page:" in up.log(), 180, "clawgate up", up)
    except BaseException:
        up.stop()
        raise
    return up, home
