"""`python -m bench.run` as a real process: what it leaves behind when it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devkit.observe import child_pids, running
from devkit.processes import REPO_ROOT, wait_until


def test_sigterm_stops_the_processes_its_scenario_started() -> None:
    # The `worker` scenario needs no wrk: its load client is in the bench process itself.
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "worker", "--seconds", "120", "--connections", "1"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: list[int] = []

    def worker_started() -> bool:
        started.extend(child_pids(bench.pid))
        return bool(started)

    try:
        wait_until(worker_started, 60, "bench worker")
        time.sleep(2)  # well into the scenario: the worker is starting or under load
        argv = Path(f"/proc/{started[0]}/cmdline").read_bytes().split(b"\0")
        config = Path(argv[argv.index(b"--config") + 1].decode())
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) == 128 + signal.SIGTERM
        assert not any(running(pid) for pid in started)
        assert not config.parent.exists()  # the run's temporary directory
    finally:
        bench.kill()
        for pid in started:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
