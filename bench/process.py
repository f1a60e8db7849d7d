"""What a running server costs the machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group (the server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return total / 2**20


SERVER_CPU = 0  # the server under test, when a load generator runs beside it
LOAD_CPU = 1  # the load generator (``loadgen.attack(cpu=LOAD_CPU)``)


@contextlib.contextmanager
def pinned(pid: int, cpu: int = SERVER_CPU) -> Iterator[None]:
    """Every thread of ``pid`` on one CPU for the duration, then back on all of them. On
    2 cores, left to the scheduler, the load generator shares the server's core often
    enough to double the server's p99; in production the load is elsewhere."""
    everything = ",".join(str(n) for n in sorted(os.sched_getaffinity(0)))
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                   capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["taskset", "-a", "-p", "-c", everything, str(pid)],
                       capture_output=True)
