"""The body of a leak report: GitHub's secret scanning partner format, a JSON list of
``{"token", "type", "url", "source"}``, and the answer GitHub accepts as feedback:
``[{"token_hash", "token_type", "label"}]`` with ``label`` ``true_positive`` or
``false_positive`` (the only two labels GitHub defines)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

MAX_TOKEN_CHARS = 512
MAX_ITEMS = 10_000


class Outcome(StrEnum):
    REVOKED = "revoked"  # a key of ours that was not revoked: revoked now
    ALREADY_REVOKED = "already_revoked"  # a key of ours, revoked before this report
    ROTATED_AWAY = "rotated_away"  # a key's previous secret whose rotation overlap had ended
    UNKNOWN = "unknown"  # well formed with a right checksum, but no key here has it
    MALFORMED = "malformed"  # not one of our keys (shape, prefix or checksum): no lookup


TRUE_POSITIVES = frozenset({Outcome.REVOKED, Outcome.ALREADY_REVOKED, Outcome.ROTATED_AWAY})


def label(outcome: Outcome) -> str:
    """GitHub's label: was this a real credential of ours?"""
    return "true_positive" if outcome in TRUE_POSITIVES else "false_positive"


@dataclass(frozen=True)
class Reported:
    """One reported match. The token is never printed (repr) and never logged."""

    token: str = field(repr=False)
    type: str = ""
    url: str = ""
    source: str = ""

    @property
    def token_hash(self) -> str:
        return hashlib.sha256(self.token.encode("utf-8")).hexdigest()


def _unicode(value: str) -> str:
    """Text that can be hashed, stored and answered: a lone surrogate (``"\\ud800"`` is
    valid JSON) has no UTF-8 form, so the token hash or the answer would fail."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _storable(value: str) -> str:
    """Text that goes into the audit row: PostgreSQL's JSONB refuses NUL (``\\u0000``)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return _unicode(value)


Token = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TOKEN_CHARS),
                  AfterValidator(_unicode)]
def _cut(limit: int) -> AfterValidator:
    """Descriptions are cut, not refused: one over-long URL in GitHub's batch must not
    leave every key in it unrevoked."""
    return AfterValidator(lambda value: value[:limit])


Stored = Annotated[StrictStr, AfterValidator(_storable)]


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token: Token
    type: Annotated[Stored, _cut(200)] | None = None
    url: Annotated[Stored, _cut(2048)] | None = None
    source: Annotated[Stored, _cut(100)] | None = None


_REPORT = TypeAdapter(list[_Item])


class ReportError(ValueError):
    def __init__(self, status: int, error: str, message: str,
                 details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details


def parse_report(body: bytes) -> list[Reported]:
    try:
        document = json.loads(body)
    # ValueError: not JSON, not UTF-8, or an integer longer than Python converts (4300
    # digits); RecursionError: arrays nested thousands deep. Either way a 400, not a 500.
    except (ValueError, RecursionError):
        raise ReportError(400, "bad_request", "the body is not JSON") from None
    if not isinstance(document, list):
        raise ReportError(422, "invalid_request", "the body must be a JSON list of "
                          "{\"token\", \"type\", \"url\", \"source\"} objects")
    if len(document) > MAX_ITEMS:
        raise ReportError(422, "invalid_request", f"at most {MAX_ITEMS} tokens per report")
    try:
        items = _REPORT.validate_python(document)
    except ValidationError as exc:
        # Field and message only: pydantic's input echo would send a token back.
        details = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                   for err in exc.errors()[:20]]
        raise ReportError(422, "invalid_request", "the report is not valid",
                          details) from None
    return [Reported(item.token, item.type or "", item.url or "", item.source or "")
            for item in items]


def answer(item: Reported, outcome: Outcome, detailed: bool,
           key_id: str | None = None) -> dict[str, Any]:
    """GitHub's feedback entry; ``detailed`` (admins) adds what apikm did and which key."""
    entry: dict[str, Any] = {"token_hash": item.token_hash, "token_type": item.type,
                             "label": label(outcome)}
    if detailed:
        entry["outcome"] = outcome.value
        entry["key_id"] = key_id
    return entry
