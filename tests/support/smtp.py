"""A real SMTP server for the tests (aiosmtpd, in a thread): STARTTLS with a throwaway CA,
AUTH with a user and password, and every accepted message kept for assertions."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.ports import free_port


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        return str(body.get_content())  # type: ignore[attr-defined]


@dataclass
class SmtpServer:
    url: str  # for APIKM_SMTP_URL
    cafile: Path
    password: str
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(self, check: Callable[[list[Received]], bool], timeout: float = 20.0
                 ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if check(found):
                return found
            time.sleep(0.05)
        raise AssertionError(f"mails not as expected after {timeout}s: "
                             f"{[(m.recipients, m.subject) for m in self.messages()]}")


class _Keep:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self._server._lock:
            self._server.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                                  envelope.original_content or envelope.content))
        return "250 Message accepted"


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apikm test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "smtp.crt", directory / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@contextmanager
def smtp_server(username: str = "apikm-mailer",
                password: str = "smtp-pass-Zq81-never-logged") -> Iterator[SmtpServer]:
    """STARTTLS required, AUTH required (only over TLS), on a free loopback port."""
    directory = Path(tempfile.mkdtemp(prefix="apikm-smtp-"))
    cert_file, key_file = _certificate(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    port = free_port()
    server = SmtpServer(f"smtp://{quote(username)}:{quote(password, safe='')}@127.0.0.1:{port}"
                        f"?starttls=true&cafile={cert_file}", cert_file, password)

    def authenticate(_server: Any, _session: Any, _envelope: Any, _mechanism: str,
                     data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and data.login.decode() == username
              and data.password.decode() == password)
        return AuthResult(success=ok)

    controller = Controller(_Keep(server), hostname="127.0.0.1", port=port,
                            tls_context=context, require_starttls=True, auth_required=True,
                            authenticator=authenticate, ready_timeout=10)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
