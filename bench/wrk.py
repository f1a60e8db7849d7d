"""Running wrk and reading its figures, shared by the benchmarks."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WrkResult:
    rate: float  # requests per second
    p99: str
    non_2xx: int


def require_wrk() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")


def run_wrk(url: str, seconds: int, connections: int, threads: int = 1,
            lua: str | None = None) -> WrkResult:
    """One wrk run against ``url``; ``lua`` is a wrk script (method, body, headers)."""
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    script: Path | None = None
    if lua is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
            handle.write(lua)
        script = Path(handle.name)
        args += ["-s", str(script)]
    try:
        output = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    finally:
        if script is not None:
            script.unlink()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"99%\s+(\S+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return WrkResult(rate=float(rate.group(1)) if rate else 0.0,
                     p99=p99.group(1) if p99 else "?",
                     non_2xx=int(non_2xx.group(1)) if non_2xx else 0)
