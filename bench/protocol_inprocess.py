"""One gateway request in process, bytes in to bytes out, without sockets: apikm's
``GatewayProtocol`` answering ``GET /v1/auth`` for a cached key, the same request through
uvicorn's ASGI cycle to the same app, and the toy check (``bench.toy``, uvicorn + Starlette).

    .venv/bin/python -m bench.protocol_inprocess [--n 20000] [--rounds 3]

Each request is fed to the protocol's ``data_received`` and the answer taken from a
recording transport, one event-loop turn per request (uvloop), so what is timed is the
Python work a server does per request. The socket's read and write, the same for every
server, are what ``bench.gateway_path`` adds on top.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

import bench.toy as toy
from apikm.config import load_settings
from apikm.identity.owners import remember_owner
from apikm.identity.principal import Principal
from apikm.keys.service import NewKey
from apikm.migrations import upgrade
from apikm.web.app import create_app
from apikm.web.gateway_protocol import GatewayProtocol


class RecordingTransport:
    """What a protocol writes, and a future set by each write (the answer is out)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.answered: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        self.written = [*self.written[-3:], data]  # the last answer (head, body) is enough
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def connect(protocol_class: type[HttpToolsProtocol], app: Any,
            state: ServerState) -> tuple[HttpToolsProtocol, RecordingTransport]:
    config = uvicorn.Config(app, http=protocol_class, lifespan="off", log_config=None,
                            access_log=False)
    config.load()
    protocol = protocol_class(config, state, {})
    transport = RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


async def per_request_us(protocol: HttpToolsProtocol, transport: RecordingTransport,
                         request: bytes, n: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for _ in range(n):
        transport.answered = loop.create_future()
        protocol.data_received(request)
        await transport.answered
        await asyncio.sleep(0)  # one loop turn, as a server takes between requests
    return (time.perf_counter() - started) / n * 1e6


async def main(n: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="apikm-protocol-bench-"))
    url = f"sqlite+aiosqlite:///{folder / 'apikm.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = load_settings(data_dir=folder, database_url=url, sync_enabled=False,
                             notify_enabled=False, usage_flush_seconds=3600)
    gateway = create_app(settings)
    lifespan = LifespanOn(uvicorn.Config(gateway, lifespan="on", log_config=None))
    await lifespan.startup()
    try:
        assert gateway.ctx is not None
        owner = Principal("u-bench", "bench", None, frozenset({"analyst"}), ())
        await remember_owner(gateway.ctx.engine, owner)
        key = (await gateway.ctx.keys.create(owner, NewKey(name="bench",
                                                           roles=["analyst"]))).secret
        toy.KEYS[hashlib.sha256(key.encode()).hexdigest()] = "bench"
        state = ServerState()
        state.default_headers = [(b"date", b"Mon, 23 Nov 2026 12:00:00 GMT")]
        head = f"Host: t\r\nX-API-Key: {key}\r\nX-Original-URI: /data/dem.tif\r\n\r\n"
        auth = f"GET /v1/auth?role=analyst HTTP/1.1\r\n{head}".encode()
        check = f"GET /check HTTP/1.1\r\n{head}".encode()
        ways = {
            "apikm /v1/auth, GatewayProtocol": (GatewayProtocol, gateway, auth),
            "apikm /v1/auth, uvicorn's ASGI cycle": (HttpToolsProtocol, gateway, auth),
            "toy check, uvicorn's ASGI cycle + Starlette": (HttpToolsProtocol, toy.app, check),
        }
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, (protocol_class, app, request) in ways.items():
                protocol, transport = connect(protocol_class, app, state)
                await per_request_us(protocol, transport, request, 200)  # warm: cached key
                answer = b"".join(transport.written[-2:])
                assert b"HTTP/1.1 200" in answer, name
                took = await per_request_us(protocol, transport, request, n)
                best[name] = min(best.get(name, took), took)
        print(f"one request in process (uvloop, best of {rounds} x {n:,}):")
        for name, us in best.items():
            print(f"  {name:<46} {us:6.1f} µs")
        toy_us = best["toy check, uvicorn's ASGI cycle + Starlette"]
        print(f"  {'GatewayProtocol / toy (lower is cheaper)':<46} "
              f"{best['apikm /v1/auth, GatewayProtocol'] / toy_us:6.2f}")
    finally:
        await lifespan.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    uvloop.run(main(options.n, options.rounds))
