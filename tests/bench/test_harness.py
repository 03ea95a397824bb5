from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.harness import Row, median_row, parse_wrk
from devkit.observe import running
from devkit.processes import REPO_ROOT

# Real wrk output from a benchmark run that the first parser read wrong: the latency stdev
# column ends in "99%", which it took for the 99th percentile (and then failed on "Req/Sec").
WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:60351/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.56ms    4.13ms  33.94ms   73.99%
    Req/Sec     2.06k   330.23     2.68k    75.50%
  Latency Distribution
     50%   14.94ms
     75%   17.46ms
     90%   20.82ms
     99%   28.42ms
  4098 requests in 2.00s, 4.21MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:   2045.98
Transfer/sec:      2.10MB
"""


def test_percentiles_come_from_their_own_lines() -> None:
    assert parse_wrk(WRK_OUTPUT) == (2045.98, 14.94, 28.42, 6)


def test_a_median_row_takes_each_figures_median_all_errors_and_the_highest_rss() -> None:
    rounds = [
        Row("pair", 100, 2.0, 9.0, 0, 1.5, {"edge": 70}, {"edge": 300}),
        Row("pair", 300, 1.0, 5.0, 2, 0.5, {"edge": 72}, {"edge": 100}),
        Row("pair", 200, 3.0, 7.0, 1, 1.0, {"edge": 71}, {"edge": 200}),
    ]
    assert median_row(rounds) == Row("pair", 200, 2.0, 7.0, 3, 1.0, {"edge": 72}, {"edge": 200})


def test_a_median_row_has_no_ttft_when_a_round_had_none() -> None:
    rounds = [Row("worker", 100, 1.0, 2.0, 0, None), Row("worker", 120, 1.0, 2.0, 0, 1.0)]
    assert median_row(rounds).ttft_p50_ms is None


# A run that spends its time in finalizers, where Python drops whatever a signal handler raises:
# a SIGTERM handler that only raised SystemExit was lost there, and the run went on.
RUN_IN_FINALIZERS = """
import subprocess, tempfile, time
from pathlib import Path
from bench.harness import stop_on_interrupt

tmp = Path(tempfile.mkdtemp())
stop_on_interrupt(tmp)
child = subprocess.Popen(["sleep", "300"])
print(tmp, child.pid, flush=True)

class Finalized:
    def __del__(self) -> None:
        time.sleep(0.05)

while True:
    Finalized()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_children_and_removes_tmp_even_inside_a_finalizer(signum: int) -> None:
    run = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_FINALIZERS], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert run.stdout is not None
        tmp, child = run.stdout.readline().split()
        time.sleep(0.3)
        run.send_signal(signum)
        assert run.wait(15) == 128 + signum
        assert not running(int(child))
        assert not Path(tmp).exists()
    finally:
        run.kill()
        run.wait()
