"""Mail through SMTP (aiosmtplib): ``APIKM_SMTP_URL`` parsed once, one message per send.

``smtp://user:password@host:587`` uses STARTTLS when the server offers it
(``?starttls=true`` insists on it, ``?starttls=false`` never uses it); ``smtps://...``
speaks TLS from the first byte (port 465 by default); ``?cafile=/path`` trusts a private CA.
The password lives in a field that no repr, log line or error message shows.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from apikm.notify.rules import Outcome

Tls = Literal["auto", "starttls", "tls", "none"]
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class SmtpUrlError(ValueError):
    """APIKM_SMTP_URL is unusable; the message never repeats the URL (it holds a password)."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: Tls
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    timeout: float = 15.0

    def describe(self) -> str:
        """For logs and the admin page: never the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.host}:{self.port} ({self.tls})"


def parse_smtp_url(url: str, timeout: float = 15.0) -> SmtpConfig:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise SmtpUrlError("APIKM_SMTP_URL is not a URL such as "
                           "smtp://user:password@host:587") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise SmtpUrlError("APIKM_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
    query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "cafile"}
    if unknown:
        raise SmtpUrlError(f"APIKM_SMTP_URL: unknown option(s) {', '.join(sorted(unknown))} "
                           "(known: starttls, cafile)")
    tls: Tls = "tls" if parts.scheme == "smtps" else "auto"
    starttls = query.get("starttls")
    if starttls is not None:
        if starttls not in _TRUE + _FALSE:
            raise SmtpUrlError("APIKM_SMTP_URL: starttls must be true or false")
        if tls == "tls":
            raise SmtpUrlError("APIKM_SMTP_URL: smtps:// is TLS already; drop starttls")
        tls = "starttls" if starttls in _TRUE else "none"
    cafile = parse_qs(parts.query).get("cafile", [None])[-1]
    return SmtpConfig(
        host=parts.hostname, port=port or (465 if tls == "tls" else 25), tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        cafile=cafile, timeout=timeout)


def build_message(sender: str, recipient: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="apikm")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    message.set_content(text)
    return message


async def send(config: SmtpConfig, message: EmailMessage) -> Outcome:
    """One delivery; a refusal with a 5xx code is permanent, anything else is retried."""
    context = ssl.create_default_context(cafile=config.cafile)
    try:
        _refused, reply = await aiosmtplib.send(
            message, hostname=config.host, port=config.port,
            username=config.username, password=config.password,
            use_tls=config.tls == "tls",
            start_tls={"auto": None, "starttls": True, "none": False, "tls": False}[config.tls],
            tls_context=context, timeout=config.timeout)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        return Outcome(False, codes[0] if codes else None, error="recipient refused: "
                       + "; ".join(f"{r.code} {r.message}" for r in exc.recipients)[:400],
                       permanent=all(code >= 500 for code in codes))
    except aiosmtplib.SMTPAuthenticationError as exc:  # configuration: worth retrying later
        return Outcome(False, exc.code, error=f"authentication refused: {exc.code}")
    except aiosmtplib.SMTPResponseException as exc:
        return Outcome(False, exc.code, error=f"{exc.code} {exc.message}"[:400],
                       permanent=exc.code >= 500)
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:400])
    return Outcome(True, 250, reply[:200])
