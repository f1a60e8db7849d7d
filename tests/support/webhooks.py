"""A real webhook receiver for the tests: an HTTP server in a thread that checks every
request's signature with the Standard Webhooks reference library (``standardwebhooks``) and
keeps what it verified. A request whose signature does not verify is answered 401 and
counted, never kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.http_server import serve_in_thread


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    body: dict[str, Any]  # verified
    raw: str


@dataclass
class WebhookReceiver:
    url: str = ""
    secret: str = ""  # set once apikm made the endpoint's signing secret
    got: list[Delivery] = field(default_factory=list)
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deliveries(self) -> list[Delivery]:
        with self.lock:
            return list(self.got)

    def wait_for(self, check: Callable[[list[Delivery]], bool],
                 timeout: float = 20.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.deliveries()
            if check(found):
                return found
            time.sleep(0.05)
        raise AssertionError(f"webhooks not as expected after {timeout}s: "
                             f"{[d.body.get('type') for d in self.deliveries()]}")


@contextmanager
def webhook_receiver(path: str = "/apikm") -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["content-length"]))
            with state.lock:
                try:
                    verified = Webhook(state.secret).verify(raw, dict(self.headers.items()))
                except WebhookVerificationError:
                    state.rejected += 1
                    status = 401
                else:
                    state.got.append(Delivery(self.headers["webhook-id"], verified,
                                              raw.decode()))
                    status = 204
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    with serve_in_thread(Handler) as base:
        state.url = base + path
        yield state
