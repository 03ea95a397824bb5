"""Reading what processes and streams do: memory, SSE lines with their arrival times."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def rss_kib(pid: int) -> int:
    """Resident memory of a process now (VmRSS), in KiB."""
    return _status_field(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The most resident memory a process has had (VmHWM), in KiB."""
    return _status_field(pid, "VmHWM")


def _status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` now, whichever of its threads started them."""
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


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def timed_lines(response: httpx.Response) -> Iterator[tuple[float, str]]:
    """Non-empty SSE lines with the monotonic time each arrived."""
    for line in response.iter_lines():
        if line:
            yield time.monotonic(), line
