"""The gateway path's access log, written off the event loop.

``APIKM_GATEWAY_ACCESS_LOG``: ``denials`` (default) logs every refused request (401, 403,
429, 4xx/5xx), ``all`` every request, ``off`` none. The default leaves out the 200s because
the gateway in front already logs each request it passes, and a log line per allowed
request would cost apikm more than the verification itself.

Requests add a tuple to a dict (no formatting, no I/O); a thread writes the lines every
half second. Identical denials (same peer, path, status and code) within one interval are
written once with their ``count``, so a flood of refusals costs one line per source, not
one per request, and no denial goes unseen.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
from starlette.types import Scope

log = structlog.get_logger("apikm.access")

FLUSH_SECONDS = 0.5
MAX_PATH = 200  # of a path in the log; the query string is never logged (keys travel there)

_Entry = tuple[str, str, int, str, str]  # method, path, status, code, peer


class GatewayLog:
    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._pending: dict[_Entry, list[float]] = {}  # -> [count, max ms]
        self._lock = threading.Lock()  # uncontended but for the twice-a-second swap
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, scope: Scope, status: int, code: str, started: float) -> None:
        if self._mode == "off" or (status == 200 and self._mode != "all"):
            return
        client = scope.get("client")
        entry = (scope["method"], scope["path"][:MAX_PATH], status, code,
                 client[0] if client else "")
        ms = (time.perf_counter() - started) * 1000
        with self._lock:
            seen = self._pending.get(entry)
            if seen is None:
                self._pending[entry] = [1, ms]
            else:
                seen[0] += 1
                seen[1] = max(seen[1], ms)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._wake.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for (method, path, status, code, peer), (count, ms) in pending.items():
            fields: dict[str, Any] = {"method": method, "path": path, "status": status,
                                      "code": code, "peer": peer, "ms": round(ms, 2)}
            if count > 1:
                fields["count"] = int(count)
            log.info("request", **fields)

    def close(self) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.flush()
