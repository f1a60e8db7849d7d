"""The JWKS cache against a real HTTP server on loopback that fails, is slow, or recovers.

Keycloak failing once made 40 tokens with unknown ``kid`` cost 40 serialised fetches of up
to 5 s each: now one fetch is in flight at a time, a failure is remembered for a growing
while, and an unknown ``kid`` refetches at most once per refresh interval.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from joserfc.jwk import ECKey

from apikm.identity.tokens import InvalidToken, JwksCache

JWKS = json.dumps({"keys": [ECKey.generate_key("P-256", parameters={"kid": "a", "use": "sig"})
                            .as_dict(private=False)]}).encode()


@dataclass
class Keycloak:
    """What the fake certs endpoint does next; ``fetches`` counts requests."""

    status: int = 500
    delay: float = 0.0
    body: bytes = JWKS  # sent with a 200
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def certs() -> Iterator[tuple[str, Keycloak]]:
    state = Keycloak()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.fetches += 1
            time.sleep(state.delay)
            body = state.body if state.status == 200 else b"{}"
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/certs", state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def _many(cache: JwksCache, count: int = 40) -> list[BaseException | object]:
    return await asyncio.gather(*(cache.key_set(f"unknown-{n}") for n in range(count)),
                                return_exceptions=True)


async def test_a_failure_is_fetched_once_and_remembered(
        certs: tuple[str, Keycloak], http: httpx.AsyncClient) -> None:
    url, keycloak = certs
    cache = JwksCache(url, http, refresh_interval=10.0, backoff=(0.3, 30.0))
    answers = await _many(cache)
    assert all(isinstance(a, InvalidToken) for a in answers)
    assert keycloak.fetches == 1
    answers = await _many(cache)  # still failing: remembered, not asked again
    assert all(isinstance(a, InvalidToken) for a in answers) and keycloak.fetches == 1
    await asyncio.sleep(0.35)
    await _many(cache)
    assert keycloak.fetches == 2
    await asyncio.sleep(0.35)  # the second failure is remembered longer (0.6 s)
    await _many(cache)
    assert keycloak.fetches == 2
    await asyncio.sleep(0.3)
    keycloak.status = 200  # Keycloak is back
    keys = await cache.key_set("a")
    assert [k.kid for k in keys.keys] == ["a"] and keycloak.fetches == 3
    await cache.key_set("a")
    await _many(cache)  # unknown kids, but the keys were fetched just now
    assert keycloak.fetches == 3


async def test_one_fetch_in_flight_however_many_wait(
        certs: tuple[str, Keycloak], http: httpx.AsyncClient) -> None:
    url, keycloak = certs
    keycloak.status, keycloak.delay = 200, 0.3
    cache = JwksCache(url, http)
    answers = await _many(cache)
    assert keycloak.fetches == 1
    assert all(not isinstance(a, BaseException) for a in answers)


async def test_unknown_kids_refetch_at_most_once_per_interval(
        certs: tuple[str, Keycloak], http: httpx.AsyncClient) -> None:
    url, keycloak = certs
    keycloak.status = 200
    cache = JwksCache(url, http, refresh_interval=0.3)
    await cache.key_set("a")
    for _ in range(3):
        await _many(cache, 10)
    assert keycloak.fetches == 1
    await asyncio.sleep(0.35)
    await _many(cache, 10)
    assert keycloak.fetches == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_fetch(
        certs: tuple[str, Keycloak], http: httpx.AsyncClient) -> None:
    url, keycloak = certs
    keycloak.status, keycloak.delay = 200, 0.3
    cache = JwksCache(url, http)
    impatient = asyncio.create_task(cache.key_set("a"))
    await asyncio.sleep(0.05)
    impatient.cancel()
    keys = await cache.key_set("a")
    assert [k.kid for k in keys.keys] == ["a"] and keycloak.fetches == 1


@pytest.mark.parametrize("body", [b"[]", b'{"keys": "x"}', b'{"keys": [{"kty": "zz"}]}'])
async def test_a_malformed_key_set_is_a_failure(
        body: bytes, http: httpx.AsyncClient, certs: tuple[str, Keycloak]) -> None:
    url, keycloak = certs
    keycloak.status, keycloak.body = 200, body
    cache = JwksCache(url, http)
    with pytest.raises(InvalidToken):
        await cache.key_set("a")
