"""Structured logs (structlog) that never carry a secret.

Two guards: fields with a secret-sounding name are masked, and anything shaped like an apikm
key or a JWT is masked wherever it appears in a string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from apikm.keys.format import BODY_LENGTH

_SECRET_FIELDS = re.compile(r"(secret|token|password|passwd|authorization|pepper|api_?key|^key$)",
                            re.IGNORECASE)
# A JWT: ``eyJ<header>.<payload>.<signature>``, parts in base64url, which has no dot. Every
# pattern here must stay linear on hostile text (paths and headers reach the logs): a plain
# ``\beyJ[...]{5,}\.`` was tried again from every ``eyJ`` of one long run, and
# ``"eyJ-" * 16000`` took a second. So the parts are possessive (never given back), and when a
# candidate fails with at least 64 characters left in its run, the second branch swallows
# them: a later ``eyJ`` of the same run would meet the same next part and fail the same way.
# With fewer left, at most ~20 more ``eyJ`` of that run are tried, so every character is
# scanned a bounded number of times, and short failures cost no Python callback.
# No ``\b`` at either end: a secret glued to a word character ("x=1_apikm_...", a key with a
# character pasted after it) must still be masked; masking a little too much is harmless.
_B64 = "[A-Za-z0-9_-]"
_JWT = re.compile(
    rf"eyJ(?:{_B64}{{5,}}+\.{_B64}{{5,}}+\.{_B64}*+(?P<jwt>)|(?={_B64}{{64}}){_B64}*+)")


def _jwt_or_text(match: re.Match[str]) -> str:
    return "[jwt]" if match.group("jwt") is not None else match.group(0)


class Redactor:
    def __init__(self, prefix: str) -> None:
        # ``<prefix>_[0-9A-Za-z]{42}``: a bounded quantifier, linear. Unlike ``key_pattern``
        # (secret scanning, which wants few false positives) it has no word boundaries.
        self._key = re.compile(rf"{re.escape(prefix)}_[0-9A-Za-z]{{{BODY_LENGTH}}}")

    def scrub(self, text: str) -> str:
        return _JWT.sub(_jwt_or_text, self._key.sub("[key]", text))

    def __call__(self, _logger: Any, _method: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for name, value in list(event.items()):
            if _SECRET_FIELDS.search(name) and name != "event":
                event[name] = "[redacted]"
            elif isinstance(value, str):
                event[name] = self.scrub(value)
        return event


def configure_logging(level: str = "INFO", json_output: bool = False,
                      key_prefix: str = "apikm") -> None:
    redactor = Redactor(key_prefix)
    renderer: Any = (structlog.processors.JSONRenderer() if json_output
                     else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Route the standard library's records (uvicorn, sqlalchemy) through the same redaction.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; the sync polls Keycloak every second.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
