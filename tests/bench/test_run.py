"""`bench/run.py` as a real process: what it leaves behind when it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import REPO_ROOT, wait_until


def children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_the_processes_its_scenario_started() -> None:
    # The `worker` scenario needs no wrk: its load client is in the bench process itself.
    bench = subprocess.Popen(
        [sys.executable, "bench/run.py", "worker", "--seconds", "120", "--connections", "1"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: list[int] = []

    def worker_started() -> bool:
        started.extend(children_of(bench.pid))
        return bool(started)

    try:
        wait_until(worker_started, 60, "bench worker")
        time.sleep(2)  # well into the scenario: the worker is starting or under load
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) != 0
        wait_until(lambda: not any(alive(pid) for pid in started), 30, "bench's worker to stop")
    finally:
        bench.kill()
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
