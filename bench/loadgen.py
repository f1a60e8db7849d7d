"""Constant-rate load (vegeta): latency at a fixed request rate, not at saturation.

wrk keeps N connections busy, so its latencies are queueing at full load and it slows down
when the server stalls (coordinated omission). vegeta sends at a fixed rate whatever the
answers do, so a stall shows up as the latency it really causes. vegeta is built from the Go
module proxy into ~/.cache/apikm/bin the first time.
"""

from __future__ import annotations

import base64
import csv
import io
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


# A fixed pool of kept-alive connections, as a gateway keeps to apikm (nginx: keepalive 32).
# vegeta's default (64 workers growing to 512, each a connection) spent the 2 cores on its
# own goroutines and connection churn: at 11,000 req/s p99 42-67 ms, against 3.6 ms with 16.
CONNECTIONS = 32


def _pool(connections: int) -> list[str]:
    return ["-keepalive", "-workers", str(connections), "-max-workers", str(connections)]


@dataclass(frozen=True)
class RateResult:
    rate: float  # achieved requests per second
    success: float  # share of 2xx answers
    p50_ms: float
    p99_ms: float
    max_ms: float


def attack(url: str, rate: int, seconds: int, headers: dict[str, str],
           connections: int = CONNECTIONS, cpu: int | None = None) -> RateResult:
    """``cpu``: run vegeta on that CPU only (``process.pinned`` puts the server on another)."""
    target = f"GET {url}\n" + "".join(f"{k}: {v}\n" for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(target)
    try:
        attacked = subprocess.run(
            [*(["taskset", "-c", str(cpu)] if cpu is not None else []),
             vegeta(), "attack", "-rate", f"{rate}/s", "-duration", f"{seconds}s",
             "-targets", handle.name, *_pool(connections)],
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


@dataclass(frozen=True)
class Target:
    """One kind of request in a mixed load; ``expected`` are the statuses that are right."""
    name: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""
    expected: frozenset[int] = frozenset({200})


@dataclass(frozen=True)
class Outcome:
    requests: int
    errors: dict[str, int]  # "target: status or error" -> count, for what was not expected
    p50_ms: float
    p99_ms: float
    max_ms: float


def attack_mixed(targets: list[Target], rate: int, seconds: int,
                 connections: int = CONNECTIONS) -> Outcome:
    """Round-robin over ``targets`` at a constant rate; every answer checked against its
    target's expected statuses (a connection error or timeout is an error too)."""
    by_url = {_tagged(t, i): t for i, t in enumerate(targets)}
    lines = "".join(json.dumps({"method": t.method, "url": url,
                                "header": {k: [v] for k, v in t.headers.items()},
                                "body": base64.b64encode(t.body).decode()}) + "\n"
                    for url, t in by_url.items())
    attacked = subprocess.run(
        [vegeta(), "attack", "-format", "json", "-rate", f"{rate}/s", "-duration", f"{seconds}s",
         *_pool(connections), "-timeout", "10s"],
        input=lines.encode(), check=True, capture_output=True)
    encoded = subprocess.run([vegeta(), "encode", "--to", "csv"], input=attacked.stdout,
                             check=True, capture_output=True)
    latencies: list[int] = []
    errors: dict[str, int] = {}
    for row in csv.reader(io.StringIO(encoded.stdout.decode())):
        # timestamp, code, latency ns, bytes out, bytes in, error, body, attack, seq, method, url
        code, latency, error, url = int(row[1]), int(row[2]), row[5], row[10]
        latencies.append(latency)
        target = by_url.get(url)
        # vegeta also fills ``error`` for any non-2xx answer; code 0 means no answer at all.
        if code == 0 or target is None or code not in target.expected:
            label = f"{target.name if target else url}: {code or error}"
            errors[label] = errors.get(label, 0) + 1
    latencies.sort()
    count = len(latencies)
    return Outcome(requests=count, errors=errors,
                   p50_ms=latencies[count // 2] / 1e6 if count else 0.0,
                   p99_ms=latencies[min(count - 1, int(count * 0.99))] / 1e6 if count else 0.0,
                   max_ms=latencies[-1] / 1e6 if count else 0.0)


def _tagged(target: Target, index: int) -> str:
    """The target's URL with a marker the server ignores, so answers map back to targets."""
    return f"{target.url}{'&' if '?' in target.url else '?'}bench_target={index}"
