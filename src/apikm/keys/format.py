"""The key string: ``<prefix>_<public id><secret><checksum>``.

* public id: 8 base62 characters, shown in lists and logs, never secret;
* secret: 28 base62 characters from ``secrets`` (28 * log2(62) = 166.7 bits);
* checksum: CRC32 of everything before it, 6 base62 characters, GitHub style, so a typo or a
  truncated paste is refused without touching the database and secret scanners can match it.

The body has a fixed length and one alphabet, so one regular expression finds keys in text.
"""

from __future__ import annotations

import re
import secrets
import string
import zlib
from dataclasses import dataclass

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
PUBLIC_ID_LENGTH = 8
SECRET_LENGTH = 28
CHECKSUM_LENGTH = 6
BODY_LENGTH = PUBLIC_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
_BODY = re.compile(rf"[0-9A-Za-z]{{{BODY_LENGTH}}}")


@dataclass(frozen=True)
class ParsedKey:
    """A key whose shape and checksum are right; says nothing about whether it exists."""

    full: str
    public_id: str

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"ParsedKey(public_id={self.public_id!r})"


def random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def encode_base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits))


# Every pair of base62 digits, so a 6-digit checksum is three look-ups instead of six
# divisions (it is computed for every verification).
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]
_PAIR_SPAN = 62 * 62


def checksum(text: str) -> str:
    """CRC32 of ``text`` as 6 base62 digits (same as ``encode_base62(crc, 6)``)."""
    crc = zlib.crc32(text.encode("ascii"))
    high, low = divmod(crc, _PAIR_SPAN)
    return _PAIRS[high // _PAIR_SPAN] + _PAIRS[high % _PAIR_SPAN] + _PAIRS[low]


def generate_key(prefix: str, public_id: str | None = None) -> ParsedKey:
    """A fresh key; pass ``public_id`` to keep a key's public id across rotation."""
    public_id = public_id or random_base62(PUBLIC_ID_LENGTH)
    head = f"{prefix}_{public_id}{random_base62(SECRET_LENGTH)}"
    return ParsedKey(full=head + checksum(head), public_id=public_id)


def parse_key(candidate: str, prefix: str) -> ParsedKey | None:
    """The parsed key, or None when the text cannot be one of ours (no lookup needed)."""
    if len(candidate) != len(prefix) + 1 + BODY_LENGTH or not candidate.startswith(prefix + "_"):
        return None
    body = candidate[len(prefix) + 1 :]
    if not _BODY.fullmatch(body):
        return None
    head, given = candidate[:-CHECKSUM_LENGTH], candidate[-CHECKSUM_LENGTH:]
    if not secrets.compare_digest(checksum(head), given):
        return None
    return ParsedKey(full=candidate, public_id=body[:PUBLIC_ID_LENGTH])


def is_well_formed(candidate: str, prefix: str) -> bool:
    """``parse_key`` without building a result: the verification hot path's format check."""
    if len(candidate) != len(prefix) + 1 + BODY_LENGTH or not candidate.startswith(prefix):
        return False
    if candidate[len(prefix)] != "_" or not _BODY.fullmatch(candidate, len(prefix) + 1):
        return False
    return secrets.compare_digest(checksum(candidate[:-CHECKSUM_LENGTH]),
                                  candidate[-CHECKSUM_LENGTH:])


def key_hint(prefix: str, public_id: str) -> str:
    """What the UI and logs show: enough to recognise a key, nothing to use it."""
    return f"{prefix}_{public_id}..."


SECRET_TAIL_LENGTH = 4


def secret_tail(key: str) -> str:
    """The last characters of a key (part of its checksum): shown next to the public id so a
    person can tell a key's secret generations apart, and nothing to guess the key with."""
    return key[-SECRET_TAIL_LENGTH:]


def key_pattern(prefix: str) -> re.Pattern[str]:
    """Finds keys in free text (log redaction, secret scanning)."""
    return re.compile(rf"\b{re.escape(prefix)}_[0-9A-Za-z]{{{BODY_LENGTH}}}\b")


def embedded_key_pattern(prefix: str) -> re.Pattern[str]:
    """Every key-shaped run of text, even glued to other characters (``x<key>y``), where the
    word boundaries of ``key_pattern`` would miss it: for redacting echoed input."""
    return re.compile(rf"{re.escape(prefix)}_[0-9A-Za-z]{{{BODY_LENGTH}}}[0-9A-Za-z]*")
