"""uvicorn's HTTP protocol, with the gateway path answered in place.

For every request uvicorn builds an ASGI scope, a request-response cycle and an asyncio task,
and passes the answer through two ``send`` awaits: about 30 µs of a 40 µs request on a 2-core
machine, more than the verification itself. For ``/v1/auth`` and ``/v1/verify`` this protocol
answers from the parser's last callback instead, when the answer needs no I/O (a cached key:
nearly every request a busy gateway sends), and writes it straight to the socket::

    data_received -> on_message_complete -> Gateway.answer_now -> Verifier.verify_now -> write

Everything else takes uvicorn's usual way to the same ``Gateway`` and gets the same answer: a
key not in the cache, a failure to count, a key with its own rate limit, ``?jwt=1``,
``Expect: 100-continue``, a percent-encoded path, and any request pipelined behind one still
running (answers leave in request order). The status line, uvicorn's default headers (``date``),
``content-length``, ``connection: close`` and HEAD are written as uvicorn writes them; every
header value the gateway sends is printable ASCII by construction (``forward_auth.header_value``).

``apikm serve`` uses it with uvicorn (the default server); with ``--server granian`` the same
``Gateway`` answers through ASGI.
"""

from __future__ import annotations

from typing import Any, cast

import httptools
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from apikm.web.forward_auth import Headers
from apikm.web.gateway import Gateway

_SKIP_BODY = "skip"  # answered already: the rest of the request is read and dropped


class GatewayProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gateway = _find_gateway(self.app)
        self._route: str | None = None  # set while a request is answered here
        self._body: list[bytes] = []
        self._body_size = 0
        self._active_at = self.loop.time()

    # --- parser callbacks ----------------------------------------------------------------
    def on_headers_complete(self) -> None:
        route = self._route = self._fast_route()
        if route is None:
            super().on_headers_complete()
        elif route == "auth" and self._answer(route, None):
            self._route = _SKIP_BODY  # answered on its headers: a body (PUT, say) is not read

    def on_body(self, body: bytes) -> None:
        if self._route is None:
            super().on_body(body)
            return
        self._body_size += len(body)
        if self._route == "verify" and self._body_size <= self._max_body:
            self._body.append(body)  # past the limit the answer is a 413: keep nothing

    def on_message_complete(self) -> None:
        route = self._route
        if route is None:
            super().on_message_complete()
            return
        self._route = None
        body = b"".join(self._body) if self._body_size <= self._max_body else None
        self._body, self._body_size = [], 0
        if route == "verify":
            self._answer(route, body)

    def _answer(self, route: str, body: bytes | None) -> bool:
        """Answered here (True), or handed over to uvicorn's ASGI cycle."""
        assert self._gateway is not None
        try:
            answer = self._gateway.answer_now(route, cast(Scope, self.scope), body)
        except Exception:  # the ASGI way below answers, errors included
            answer = None
        if answer is None:
            self._route = None
            self._hand_over(body or b"", more_body=route == "auth")
            return False
        self._write(answer[0], answer[1], answer[2])
        return True

    # --- keep-alive: one idle timer per connection, not one per request ---------------
    # uvicorn cancels its idle timer on every read and arms a new one after every answer: a
    # timer handle per request, a tenth of a busy gateway connection's time. Here the timer
    # stays armed; every read notes the time, and when it fires it closes the connection
    # only if it was idle (no request under way) for the whole keep-alive timeout.
    def _unset_keepalive_if_required(self) -> None:
        self._active_at = self.loop.time()

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing():
            return
        idle = self.loop.time() - self._active_at
        busy = self._route is not None or (self.cycle is not None
                                           and not self.cycle.response_complete)
        if idle >= self.timeout_keep_alive and not busy:
            self.transport.close()
            return
        wait = self.timeout_keep_alive - idle if not busy else self.timeout_keep_alive
        self.timeout_keep_alive_task = self.loop.call_later(
            max(wait, 0.05), self.timeout_keep_alive_handler)

    def on_response_complete(self) -> None:
        armed = self.timeout_keep_alive_task
        super().on_response_complete()  # an ASGI answer: uvicorn arms a timer of its own
        if armed is not None and self.timeout_keep_alive_task is not armed:
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = armed

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    # --- flow control: a client that does not read its answers stops being read ---------
    def resume_writing(self) -> None:
        super().resume_writing()
        self.flow.resume_reading()

    # --- helpers -------------------------------------------------------------------------
    @property
    def _max_body(self) -> int:
        assert self._gateway is not None
        return self._gateway.max_body

    def _fast_route(self) -> str | None:
        """The gateway route to answer here, or None for uvicorn's way."""
        gateway = self._gateway
        if (gateway is None or gateway.ctx is None or self.expect_100_continue
                or (self.cycle is not None and not self.cycle.response_complete)
                or self.parser.should_upgrade()):
            return None
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return None  # uvicorn's way says what is wrong
        if b"%" in url.path:
            return None
        path = url.path.decode("ascii")
        route = gateway.route(path)
        if route is not None:
            scope = self.scope
            scope["method"] = self.parser.get_method().decode("ascii")
            version = self.parser.get_http_version()
            if version != "1.1":
                scope["http_version"] = version
            scope["path"] = path
            scope["raw_path"] = url.path
            scope["query_string"] = url.query or b""
        return route

    def _hand_over(self, body: bytes, more_body: bool) -> None:
        """Start uvicorn's ASGI cycle for this request: on its headers (``more_body``: the
        parser feeds it the body as usual), or with the whole body already read."""
        super().on_headers_complete()
        if not more_body:
            self.cycle.body += body
            self.cycle.more_body = False
            self.cycle.message_event.set()

    def _write(self, status: int, headers: Headers, body: bytes) -> None:
        keep_alive = (self.scope.get("http_version") != "1.0"
                      and self.parser.should_keep_alive())
        parts = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if self.scope["method"] != "HEAD":
            parts.append(body)
        self.transport.write(b"".join(parts))
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
            return
        if self.flow.write_paused:
            self.flow.pause_reading()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)


def _find_gateway(app: object) -> Gateway | None:
    """The ``Gateway`` under whatever uvicorn wrapped the app in."""
    for _ in range(8):
        if isinstance(app, Gateway):
            return app
        app = getattr(app, "app", None)
    return None
