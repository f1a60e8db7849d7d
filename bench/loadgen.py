"""Constant-rate load (vegeta): latency at a fixed request rate, not at saturation.

wrk keeps N connections busy, so its latencies are queueing at full load and it slows down
when the server stalls (coordinated omission). vegeta sends at a fixed rate whatever the
answers do, so a stall shows up as the latency it really causes. vegeta is built from the Go
module proxy into ~/.cache/apikm/bin the first time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

VEGETA = "github.com/tsenart/vegeta/v12@v12.12.0"
BIN = Path.home() / ".cache" / "apikm" / "bin"


def vegeta() -> str:
    found = shutil.which("vegeta") or (str(BIN / "vegeta") if (BIN / "vegeta").exists() else None)
    if found:
        return found
    if not shutil.which("go"):
        raise SystemExit("vegeta is needed: install Go, or put vegeta on PATH")
    print(f"  building vegeta ({VEGETA}) into {BIN} ...", flush=True)
    subprocess.run(["go", "install", VEGETA], check=True,
                   env={**os.environ, "GOBIN": str(BIN)}, cwd=tempfile.gettempdir())
    return str(BIN / "vegeta")


@dataclass(frozen=True)
class RateResult:
    rate: float  # achieved requests per second
    success: float  # share of 2xx answers
    p50_ms: float
    p99_ms: float
    max_ms: float


def attack(url: str, rate: int, seconds: int, headers: dict[str, str]) -> RateResult:
    target = f"GET {url}\n" + "".join(f"{k}: {v}\n" for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(target)
    try:
        attacked = subprocess.run(
            [vegeta(), "attack", "-rate", f"{rate}/s", "-duration", f"{seconds}s",
             "-targets", handle.name, "-keepalive", "-workers", "64", "-max-workers", "512"],
            check=True, capture_output=True)
        report = subprocess.run([vegeta(), "report", "-type", "json"], input=attacked.stdout,
                                check=True, capture_output=True)
    finally:
        Path(handle.name).unlink()
    data = json.loads(report.stdout)
    latencies = data["latencies"]
    return RateResult(rate=data["throughput"], success=data["success"],
                      p50_ms=latencies["50th"] / 1e6, p99_ms=latencies["99th"] / 1e6,
                      max_ms=latencies["max"] / 1e6)
