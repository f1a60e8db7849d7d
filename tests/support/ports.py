from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 60.0, ok: tuple[int, ...] = (200,),
              alive: Callable[[], int | None] | None = None,
              log: Callable[[], str] | None = None) -> None:
    """Wait for ``url``; fail at once, with the server's log, if its process exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if alive is not None and alive() is not None:
            tail = log()[-3000:] if log else ""
            raise RuntimeError(f"server for {url} exited before it was ready:\n{tail}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code in ok:
                return
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last!r})")
