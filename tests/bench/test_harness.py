from __future__ import annotations

from bench.harness import parse_wrk

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
